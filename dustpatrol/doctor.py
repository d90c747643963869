"""Installation checks behind ``dustpatrol doctor``: what is missing and how to fix it."""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from dustpatrol.errors import ConfigError
from dustpatrol.settings import Settings, load_settings

MIN_PYTHON = (3, 11)
DB_CONNECT_TIMEOUT_S = 5


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something a user may want is missing
    FAIL = "fail"  # a required part is missing or broken


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""


def run_checks(config_file: Path | None) -> list[CheckResult]:
    """Run every check; never raises for a failing check, reports it instead."""
    results = [check_python(), *check_packages()]
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        results.append(
            CheckResult("settings", CheckStatus.FAIL, str(exc), "correct the setting named above")
        )
        return results
    results.append(CheckResult("settings", CheckStatus.OK, "loaded and valid"))
    results.append(check_data_dir(settings))
    results.append(check_database(settings))
    results.append(check_storage(settings))
    results.append(check_queue(settings))
    results.append(check_model(settings))
    results.append(check_pdf_font(settings))
    return results


def check_python() -> CheckResult:
    found = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return CheckResult("python", CheckStatus.OK, f"Python {found}")
    return CheckResult(
        "python",
        CheckStatus.FAIL,
        f"Python {found} is too old",
        f"install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer and run `make test` again",
    )


def check_packages() -> list[CheckResult]:
    """Compare installed distributions with dustpatrol's declared requirements."""
    try:
        declared = metadata.requires("dustpatrol") or []
    except metadata.PackageNotFoundError:
        return [
            CheckResult(
                "packages",
                CheckStatus.FAIL,
                "dustpatrol is not installed as a distribution",
                "run `make test` (or `pip install -e .`) in the source tree",
            )
        ]
    missing_required: list[str] = []
    mismatched: list[str] = []
    missing_extras: dict[str, list[str]] = {}
    for line in declared:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        extra = _extra_of(requirement)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            if extra is None:
                missing_required.append(str(requirement))
            else:
                missing_extras.setdefault(extra, []).append(requirement.name)
            continue
        if extra is None and not requirement.specifier.contains(installed, prereleases=True):
            mismatched.append(f"{requirement.name} {installed} (tested: {requirement.specifier})")
    results = []
    if missing_required:
        results.append(
            CheckResult(
                "packages",
                CheckStatus.FAIL,
                "missing: " + ", ".join(missing_required),
                "run `make test` or `pip install -e .` to install them",
            )
        )
    elif mismatched:
        results.append(
            CheckResult(
                "packages",
                CheckStatus.WARN,
                "versions differ from the tested stack: " + ", ".join(mismatched),
                "reinstall with `pip install -e .` to get the tested versions",
            )
        )
    else:
        results.append(CheckResult("packages", CheckStatus.OK, "all runtime requirements present"))
    for extra, names in sorted(missing_extras.items()):
        results.append(
            CheckResult(
                f"extra [{extra}]",
                CheckStatus.WARN,
                "not installed: " + ", ".join(sorted(names)),
                f"pip install -e '.[{extra}]'",
            )
        )
    return results


def _extra_of(requirement: Requirement) -> str | None:
    """The extra a requirement belongs to, or None for a plain runtime requirement."""
    marker = requirement.marker
    if marker is None or marker.evaluate({"extra": ""}):
        return None
    extras = metadata.metadata("dustpatrol").get_all("Provides-Extra") or []
    return next((extra for extra in extras if marker.evaluate({"extra": extra})), "unknown")


def check_data_dir(settings: Settings) -> CheckResult:
    data_dir = settings.paths.data_dir
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK):
        state = "exists" if data_dir.exists() else "will be created"
        return CheckResult("data folder", CheckStatus.OK, f"{data_dir} ({state}, writable)")
    return CheckResult(
        "data folder",
        CheckStatus.FAIL,
        f"{data_dir} cannot be written ({existing} is not a writable folder)",
        "set paths.data_dir (DUSTPATROL_PATHS__DATA_DIR) to a writable folder",
    )


def check_storage(settings: Settings) -> CheckResult:
    """Object storage answers a probe write, read and delete (local folders: the data folder
    check covers them)."""
    from dustpatrol.storage import StorageError, open_storage

    try:
        storage = open_storage(settings)
        if storage.local_path("frames/probe") is not None:
            return CheckResult("storage", CheckStatus.OK, storage.describe())
        storage.check()
    except StorageError as exc:
        return CheckResult(
            "storage",
            CheckStatus.FAIL,
            str(exc),
            "check storage.url, storage.endpoint_url and the credentials "
            "(DUSTPATROL_STORAGE__*), and that the bucket exists",
        )
    return CheckResult("storage", CheckStatus.OK, f"{storage.describe()}: write, read, delete")


def check_queue(settings: Settings) -> CheckResult:
    """The broker answers and says how much work waits in each queue (no broker: jobs run in
    the service's own process)."""
    if not settings.queue.url:
        return CheckResult("queue", CheckStatus.OK, "jobs run in the service's process")
    try:
        import redis
    except ModuleNotFoundError:
        return CheckResult(
            "queue",
            CheckStatus.FAIL,
            "queue.url is set but the Redis client is not installed",
            "pip install 'dustpatrol[scale]'",
        )
    shown = re.sub(r"//[^@/]*@", "//***@", settings.queue.url)
    try:
        client = redis.Redis.from_url(settings.queue.url, socket_connect_timeout=5)
        client.ping()
        waiting = {q: int(client.llen(q)) for q in ("frames", "notices", "webhooks")}
    except redis.RedisError as exc:
        return CheckResult(
            "queue",
            CheckStatus.FAIL,
            f"{shown}: {exc}",
            "start redis-server, or correct queue.url (DUSTPATROL_QUEUE__URL)",
        )
    counts = ", ".join(f"{q} {n}" for q, n in waiting.items())
    return CheckResult("queue", CheckStatus.OK, f"{shown}: waiting {counts}")


def check_database(settings: Settings) -> CheckResult:
    url = settings.database.parsed_url()
    shown = settings.database.masked_url()
    if url.get_backend_name() == "sqlite":
        return _check_sqlite(url.database, shown)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": DB_CONNECT_TIMEOUT_S})
    except ModuleNotFoundError as exc:
        return CheckResult(
            "database",
            CheckStatus.FAIL,
            f"{shown}: the driver module {exc.name!r} is not installed",
            "pip install 'psycopg[binary]' (PostgreSQL support)",
        )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            postgis = connection.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
            ).scalar()
    except SQLAlchemyError as exc:
        reason = " ".join(str(exc.orig if hasattr(exc, "orig") else exc).split())
        return CheckResult(
            "database",
            CheckStatus.FAIL,
            f"{shown}: cannot connect ({reason})",
            "start the database server or correct database.url (DUSTPATROL_DATABASE__URL)",
        )
    finally:
        engine.dispose()
    if postgis is None:
        return CheckResult(
            "database",
            CheckStatus.WARN,
            f"{shown} reachable, without PostGIS: spatial queries on bounding boxes",
            "install PostGIS (Debian: postgresql-postgis) and CREATE EXTENSION postgis before "
            "the service first migrates the database",
        )
    return CheckResult("database", CheckStatus.OK, f"{shown} reachable, PostGIS {postgis}")


def _check_sqlite(database: str | None, shown: str) -> CheckResult:
    if not database or database == ":memory:":
        return CheckResult("database", CheckStatus.OK, f"{shown} (in memory)")
    path = Path(database)
    if not path.exists():
        folder = path.parent
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return CheckResult(
                "database",
                CheckStatus.FAIL,
                f"{shown}: folder {folder} is not writable",
                "set database.url to a file in a writable folder",
            )
        return CheckResult("database", CheckStatus.OK, f"{shown} (created on first use)")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return CheckResult(
            "database",
            CheckStatus.FAIL,
            f"{shown}: {exc}",
            "move the damaged file away or point database.url to another file",
        )
    return CheckResult("database", CheckStatus.OK, f"{shown} readable")


def check_model(settings: Settings) -> CheckResult:
    """The detector's file opens as a segmentation model; says the thresholds it detects with."""
    model_path = settings.detection.model_path
    if model_path.is_file():
        from vision.errors import VisionError
        from vision.onnx_model import OnnxSegmenter

        size_mb = model_path.stat().st_size / 1e6
        try:
            model = OnnxSegmenter(model_path, threads=1)
        except VisionError as exc:
            return CheckResult(
                "model",
                CheckStatus.FAIL,
                str(exc),
                "point detection.model_path (DUSTPATROL_DETECTION__MODEL_PATH) at a shipped "
                "model in models/, or export and calibrate yours again",
            )
        one = settings.detection.min_confidence
        if one is not None:
            shown, whose = f"{one:g} for every class", "set in detection.min_confidence"
        else:
            values = model.calibrated_confidence or (0.25,) * len(model.class_names)
            shown = ", ".join(
                f"{name} > {value:g}" for name, value in zip(model.class_names, values, strict=True)
            )
            whose = "the model's own" if model.calibrated_confidence else "no thresholds of its own"
        return CheckResult(
            "model", CheckStatus.OK, f"{model_path} ({size_mb:.1f} MB; {shown}: {whose})"
        )
    return CheckResult(
        "model",
        CheckStatus.WARN,
        f"no detector weights at {model_path}; `analyze` needs them",
        "use the weights shipped in models/ or set detection.model_path "
        "(DUSTPATROL_DETECTION__MODEL_PATH)",
    )


def check_pdf_font(settings: Settings) -> CheckResult:
    from dustpatrol.fonts import INSTALL_HINT, FontError, find_cjk_font

    try:
        font = find_cjk_font(settings.notices.pdf_font)
    except FontError as exc:
        return CheckResult("pdf font", CheckStatus.WARN, str(exc).split(";")[0], INSTALL_HINT)
    return CheckResult("pdf font", CheckStatus.OK, f"{font} (notice PDFs in Chinese)")
