"""The one typed configuration of dustpatrol.

Sources, lowest to highest precedence: field defaults < the TOML file named by ``--config``
(or ``DUSTPATROL_CONFIG``) < environment variables ``DUSTPATROL_<SECTION>__<FIELD>``.
Unknown keys fail at start-up, wherever they come from: a typo must never be silently ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dustpatrol.errors import ConfigError

ENV_PREFIX = "DUSTPATROL_"
ENV_NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "DUSTPATROL_CONFIG"

SUPPORTED_DATABASE_DRIVERS = frozenset(
    {"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
)
MAX_ALTITUDE_LEGAL_M = 120.0  # China's cap for light drones in ordinary airspace

_config_file: ContextVar[Path | None] = ContextVar("dustpatrol_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsSettings(_Section):
    """Where dustpatrol keeps its data. Relative paths are relative to the working directory."""

    data_dir: Path = Path("var")
    frames_dir: Path = Path("var/frames")
    models_dir: Path = Path("models")


class DatabaseSettings(_Section):
    """The database: SQLite (embedded default) or PostgreSQL."""

    url: str = "sqlite:///var/dustpatrol.db"
    echo: bool = False
    # SQLite only. "normal": a commit is durable once the service has it, across crashes of
    # the service (WAL, no fsync per commit; the log is synced at each checkpoint); a power
    # failure of the machine may undo the last moments' commits. "full": fsync every commit
    # (about 2-5 ms each here), durable across power failures too.
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    # PostgreSQL only. Short reads (a notice list page, a ledger, map data) run on the event
    # loop by default: faster with a worker per core and the database nearby; true moves them
    # to a worker thread, so that a stalled query holds up no other request of the process
    # (better with a single worker, or a database across a network).
    short_reads_in_thread: bool = False

    @field_validator("url")
    @classmethod
    def _url_is_supported(cls, value: str) -> str:
        try:
            parsed = make_url(value)
        except ArgumentError:
            raise ValueError(
                f"{value!r} is not a database URL; use sqlite:///var/dustpatrol.db or "
                "postgresql+psycopg://user:password@host:5432/dbname"
            ) from None
        if parsed.drivername not in SUPPORTED_DATABASE_DRIVERS:
            raise ValueError(
                f"database driver {parsed.drivername!r} is not supported; use one of "
                + ", ".join(sorted(SUPPORTED_DATABASE_DRIVERS))
            )
        return value

    def parsed_url(self) -> URL:
        """The URL as a SQLAlchemy ``URL``."""
        return make_url(self.url)

    def masked_url(self) -> str:
        """The URL with any password replaced by ``***``, safe to print or log."""
        return self.parsed_url().render_as_string(hide_password=True)


class StorageSettings(_Section):
    """Where the service keeps frames, rectification photos, evidence crops and overlays:
    local folders (``paths``) by default, or S3-compatible object storage."""

    url: str = Field(
        "",
        description="empty: local folders under paths; s3://bucket/prefix: object storage",
    )
    endpoint_url: str | None = Field(
        None, description="the S3 endpoint, e.g. http://10.0.0.7:8333 (none: AWS)"
    )
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url_is_supported(cls, value: str) -> str:
        if value and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", value):
            raise ValueError(
                f"{value!r} is not a storage URL: leave it empty for local folders or give "
                "s3://bucket/prefix (bucket: 3-63 lower-case letters, digits, dots, hyphens)"
            )
        return value.rstrip("/")


class QueueSettings(_Section):
    """Where background work runs (frame analysis, findings and notices, webhook deliveries,
    housekeeping): in the service's own process (no URL, the default), or on Celery workers
    (`dustpatrol worker`) fed through a Redis broker."""

    url: str = Field(
        "", description="empty: in the service's process; redis://host:6379/0: Celery workers"
    )
    lease_s: float = Field(
        30.0,
        gt=0.0,
        description="a running job's claim, renewed while it runs; a job whose worker died is "
        "run again once its lease lapses",
    )
    sweep_s: float = Field(
        5.0, gt=0.0, description="how often a worker looks for work whose message was lost"
    )
    republish_s: float = Field(
        300.0,
        gt=0.0,
        description="a waiting job whose message was sent this long ago is sent again "
        "(a broker that lost it)",
    )
    housekeeping_s: float = Field(
        60.0, gt=0.0, description="how often notices are checked for deadlines"
    )

    @field_validator("url")
    @classmethod
    def _url_is_supported(cls, value: str) -> str:
        if value and not re.fullmatch(r"rediss?://\S+", value):
            raise ValueError(
                f"{value!r} is not a queue URL: leave it empty to run jobs in the service's "
                "process or give redis://host:6379/0 (a Redis broker for Celery workers)"
            )
        return value


class LogSettings(_Section):
    """What the service and the workers log, and how."""

    format: Literal["text", "json"] = Field(
        "text",
        description="json: one JSON object a line with the request or job id (for a log "
        "collector); text: for people",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DetectionSettings(_Section):
    """The detector and tiled inference."""

    model_path: Path = Field(
        Path("models/dustpatrol-seg-int8.onnx"),
        description="the detector: the INT8 model (about twice as fast on CPUs with 8-bit dot "
        "products) or models/dustpatrol-seg.onnx (float)",
    )
    target_gsd_m: float = Field(
        0.1, ge=0.005, le=1.0, description="analysis resolution, m/px (the model's own)"
    )
    tile_overlap: float = Field(
        0.17, ge=0.0, lt=0.9, description="fraction of the model's tile shared by neighbours"
    )
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="one detection threshold for every class; unset: the model's own per "
        "class (chosen on validation districts by `dustpatrol train calibrate`), or 0.25",
    )
    threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1),
        ge=1,
        le=256,
        description="ONNX Runtime threads per detector (default: the cores but one, which "
        "decodes the next frame meanwhile; on 2 cores one thread detects as fast as two)",
    )
    in_service: bool = Field(
        True, description="the service detects in uploaded frames (off: clients analyse)"
    )
    sites_only: bool = Field(
        False,
        description="detect only in the parts of a frame within 15 m (plus the match "
        "tolerance) of a registered site: faster over countryside, no off-site findings",
    )
    live_findings: bool = Field(
        True,
        description="findings (and notices) from the frames analysed so far while a flight "
        "is still uploading (off: only once the flight is complete)",
    )


class GeoreferencingSettings(_Section):
    """Placing detections on the ground and matching them to sites."""

    ground_height_m: float = Field(
        0.0, description="ground height above the take-off point, for flat-ground casting"
    )
    yaw_std_deg: float = Field(0.5, ge=0.0, le=10.0, description="heading error, 1 sigma")
    tilt_std_deg: float = Field(0.2, ge=0.0, le=10.0, description="pitch/roll error, 1 sigma")
    match_tolerance_m: float = Field(2.0, ge=0.0, le=100.0)
    merge_vote_share: float = Field(
        0.34,
        ge=0.0,
        le=1.0,
        description=(
            "a finding seen by several frames is outlined where at least this share of the "
            "frames that saw the ground called it so (0: the union of every frame's outline)"
        ),
    )
    merge_vote_max_uncertainty_m: float = Field(
        5.0,
        ge=0.0,
        description=(
            "frames vote on a patch only when its observations' median position uncertainty "
            "(95 %) is at most this; above it (single-point GNSS) the union is kept"
        ),
    )


class QualitySettings(_Section):
    """Frame quality checks before detection (dustpatrol.quality)."""

    min_sharpness: float = Field(
        6.0,
        ge=0.0,
        description="90th percentile of Laplacian variance over a 4x4 grid at 800 px width",
    )
    min_brightness: float = Field(20.0, ge=0.0, le=255.0, description="mean luma, 0..255")
    max_brightness: float = Field(235.0, ge=0.0, le=255.0)
    min_contrast: float = Field(4.0, ge=0.0, description="luma standard deviation")
    max_off_nadir_deg: float = Field(
        30.0, ge=0.0, le=90.0, description="raise it for oblique check-mode flights"
    )
    max_site_distance_m: float = Field(
        50.0, ge=0.0, description="frames seeing no site within this distance are skipped"
    )
    duplicate_distance_m: float = Field(0.3, ge=0.0, le=10.0)
    min_site_coverage: float = Field(
        0.9, ge=0.0, le=1.0, description="share of a site the frames must see to inspect it"
    )


class NoticesSettings(_Section):
    """Rules that turn findings into rectification notices."""

    number_prefix: str = Field("GX", pattern=r"^[A-Z]{1,6}$")
    require_confirmation: bool = True
    min_confidence: float = Field(
        0.34,
        ge=0.0,
        le=1.0,
        description=(
            "a finding's confidence (the mean over the frames that saw its ground, 0 from "
            "each that found nothing there) must reach this for a notice; chosen on held-out "
            "districts 9004-9009 (README)"
        ),
    )
    min_area_m2: dict[str, float] = Field(
        default_factory=lambda: {"exposed_soil": 20.0, "road_dust": 10.0}
    )
    deadline_hours: dict[str, float] = Field(
        default_factory=lambda: {"exposed_soil": 24.0, "road_dust": 4.0}
    )
    escalate_after_hours: float = Field(24.0, ge=0.0, description="overdue this long: escalated")
    rectification_photo_required: bool = Field(
        True, description="reporting a notice rectified needs at least one photo attached"
    )
    timezone: str = Field("Asia/Shanghai", description="local time of deadlines in notices")
    pdf_font: Path | None = Field(
        None,
        description="a TTF/TTC/OTF font with Chinese glyphs for notice PDFs; "
        "found among the system fonts when unset (Debian: fonts-wqy-microhei)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Shanghai)") from None
        return value

    @field_validator("min_area_m2", "deadline_hours")
    @classmethod
    def _positive_per_class(cls, value: dict[str, float]) -> dict[str, float]:
        for class_name, number in value.items():
            if number < 0:
                raise ValueError(f"{class_name}: {number} must not be negative")
        return value

    def acts_on(self, finding_class: str, area_m2: float, confidence: float) -> bool:
        """Whether a finding of this class, this large and this sure, calls for a notice
        (issues one, or sends a rectified one back to its bureau)."""
        return (
            finding_class in self.deadline_hours
            and area_m2 >= self.min_area_m2.get(finding_class, 0.0)
            and confidence >= self.min_confidence
        )


class FlightSettings(_Section):
    """Flight execution and pre-flight checks."""

    require_rtk_fixed: bool = True
    altitude_m: float = Field(100.0, gt=0.0, le=MAX_ALTITUDE_LEGAL_M)
    connect_timeout_s: float = Field(30.0, gt=0.0)
    battery_reserve_pct: float = Field(25.0, ge=0.0, lt=100.0)


class ServerSettings(_Section):
    """The HTTP service."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="server processes (one per core is the usual choice); one of them also "
        "runs the in-process job worker and webhook dispatcher",
    )
    access_log: bool = Field(
        True, description="log every request (turn off when a reverse proxy logs them)"
    )
    secret_key: SecretStr | None = None
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    map_tile_url: str | None = Field(
        None,
        description="a basemap tile URL template for /map, e.g. an intranet server's "
        "https://tiles.example/{z}/{x}/{y}.png; none by default (offline networks)",
    )
    map_tile_attribution: str = ""
    max_body_mb: float = Field(
        16.0,
        gt=0.0,
        description="largest request body other than frame, photo and registry uploads "
        "(findings, flight plans); larger ones are refused before they are read",
    )
    login_failures_per_user: int = Field(
        5, ge=1, description="failed logins for one user name before it is locked for a while"
    )
    login_failures_per_address: int = Field(
        20, ge=1, description="failed logins from one client address before it is locked"
    )
    login_lock_s: float = Field(
        60.0, gt=0.0, description="first lock; each further failure doubles it, up to 15 min"
    )
    webhook_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="how long a bureau's webhook may take to answer; a delivery in flight is "
        "someone else's to retry after three times this",
    )
    allow_private_webhooks: bool = Field(
        False,
        description="let bureaus' webhooks point at loopback, link-local or private addresses "
        "(an intranet receiver); off, such URLs are refused",
    )


class ClientSettings(_Section):
    """Where `dustpatrol analyze --api` and `fly --upload` send frames and findings."""

    api_url: str | None = Field(None, description="the notice service, e.g. http://10.0.0.5:8000")
    api_key: SecretStr | None = Field(
        None, description="an API key of an inspector (POST /users/{id}/api-keys)"
    )


class Settings(BaseSettings):
    """Every setting of dustpatrol, grouped by section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    paths: PathsSettings = PathsSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    queue: QueueSettings = QueueSettings()
    log: LogSettings = LogSettings()
    detection: DetectionSettings = DetectionSettings()
    georeferencing: GeoreferencingSettings = GeoreferencingSettings()
    quality: QualitySettings = QualitySettings()
    notices: NoticesSettings = NoticesSettings()
    flight: FlightSettings = FlightSettings()
    server: ServerSettings = ServerSettings()
    client: ClientSettings = ClientSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the effective settings, or raise `ConfigError` naming the bad field and why.

    ``config_file`` wins over ``DUSTPATROL_CONFIG``; ``environ`` defaults to ``os.environ``
    and is only read to reject unknown ``DUSTPATROL_*`` variables.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_FILE_ENV):
        config_file = Path(environ[CONFIG_FILE_ENV])
    if config_file is not None:
        _check_config_file(config_file)
    _check_environment_keys(environ)
    token = _config_file.set(config_file)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, config_file)) from None
    finally:
        _config_file.reset(token)


def _check_config_file(config_file: Path) -> None:
    if not config_file.is_file():
        raise ConfigError(
            f"config file {config_file} does not exist; pass an existing TOML file to --config"
        )
    try:
        tomllib.loads(config_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {config_file} is not UTF-8 text") from None


def _check_environment_keys(environ: Mapping[str, str]) -> None:
    sections = Settings.model_fields
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key == CONFIG_FILE_ENV:
            continue
        parts = key[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        section = sections.get(parts[0])
        if section is None:
            raise ConfigError(
                f"unknown setting in environment variable {key}: no section {parts[0]!r}; "
                f"sections are {', '.join(sections)}"
            )
        if len(parts) < 2:
            continue  # a whole section as JSON; validated by pydantic
        section_model = section.annotation
        assert isinstance(section_model, type) and issubclass(section_model, BaseModel)
        if parts[1] not in section_model.model_fields:
            raise ConfigError(
                f"unknown setting in environment variable {key}: section {parts[0]!r} has "
                f"no field {parts[1]!r}; fields are {', '.join(section_model.model_fields)}"
            )


def _describe_validation_error(exc: ValidationError, config_file: Path | None) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            where = f" in {config_file}" if config_file else ""
            problems.append(f"unknown setting {location!r}{where}")
        else:
            env_name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(
                str(part).upper() for part in error["loc"][:2]
            )
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"invalid setting {location} ({env_name}): {message}")
    return "; ".join(problems)


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets and database passwords masked."""
    data = settings.model_dump(mode="json")
    data["database"]["url"] = settings.database.masked_url()
    for section_name, section in data.items():
        section_model = getattr(settings, section_name)
        for field_name in section:
            if isinstance(getattr(section_model, field_name), SecretStr):
                section[field_name] = "********"
    return data
