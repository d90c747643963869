"""The notice service under a bounded local load, with 200,000 notices in SQLite and in
PostgreSQL: latency (p50/p99) and requests per second of a bureau listing its open notices a
page at a time, and of issuing a notice (findings posted, rules applied, notice numbered).

The service runs as `dustpatrol serve` in its own process on 127.0.0.1; the load comes from
this process with a fixed number of requests over a few threads, so it stops by itself. Both
share this machine's two cores: the figures are for the whole box, not the server alone.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from api.db import make_engine, session_factory
from api.migrate import upgrade
from api.models.bureaus import Bureau
from api.models.notices import Notice, NoticeEvent
from api.models.sites import Site
from api.models.users import Role, UserCreate
from api.routes.users import add_user
from bench.results import BenchResult

PASSWORD = "bench-password-123"
LON0, LAT0, STEP = 115.40, 36.40, 0.002
BUREAUS = 10
OPEN_SHARE = 0.10
CONCURRENCY = 8
PAGE = 50
TIME_CAP_S = 120.0
ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool = False) -> list[BenchResult]:
    notices = 20_000 if quick else 200_000
    requests = {
        "list": 300 if quick else 2000,
        "issue": 100 if quick else 400,
        "ledger": 10 if quick else 40,
    }
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        results += _backend("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp), notices, requests)
    with _postgres_database() as (url, reason):
        if url is None:
            results.append(
                BenchResult("api", "postgresql", "ms", 0, 0, 0, 0, note=f"skipped: {reason}")
            )
        else:
            with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
                results += _backend("postgresql", url, Path(tmp), notices, requests)
    return results


@contextmanager
def _postgres_database() -> Iterator[tuple[str | None, str]]:
    """A fresh database on the PostgreSQL of DP_BENCH_POSTGRES_URL, or on a durable server
    that `.ci/postgres.sh` starts on port 54330 (installing PostgreSQL from Debian if needed)."""
    admin_url = os.environ.get("DP_BENCH_POSTGRES_URL")
    if not admin_url:
        # Its own durable server (fsync on, like production), beside any test server.
        env = os.environ | {
            "DP_TEST_POSTGRES_PORT": "54330",
            "DP_TEST_POSTGRES_DATA": "/tmp/dustpatrol-pg-bench",
            "DP_TEST_POSTGRES_DURABLE": "1",
        }
        started = subprocess.run(
            ["bash", str(ROOT / ".ci" / "postgres.sh")],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if started.returncode != 0:
            yield None, f".ci/postgres.sh failed: {started.stderr.strip()[-300:]}"
            return
        admin_url = started.stdout.strip()
    admin = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"dp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False), ""
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _square(i: int) -> tuple[dict[str, Any], tuple[float, float, float, float]]:
    row, column = divmod(i, 200)
    lon, lat = LON0 + column * STEP, LAT0 + row * STEP
    bbox = (lon, lat, lon + STEP / 2, lat + STEP / 2)
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, bbox


def seed(url: str, notices: int) -> dict[str, Any]:
    """Bureaus, users, notices/10 sites and ``notices`` notices (10 % open, spread over the
    bureaus; closed ones from last year), each with its issuing event."""
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    sites = notices // 10
    now = datetime.now(UTC)
    with sessions() as session:
        bureaus = [Bureau(name=f"第{i + 1}住建局") for i in range(BUREAUS)]
        session.add_all(bureaus)
        session.commit()
        bureau_ids = [b.id for b in bureaus]
        add_user(session, UserCreate(username="analyst", password=PASSWORD, role=Role.ANALYST))
        add_user(
            session,
            UserCreate(
                username="bureau", password=PASSWORD, role=Role.BUREAU, bureau_id=bureau_ids[0]
            ),
        )
        site_rows = []
        for i in range(sites):
            geometry, (x0, y0, x1, y1) = _square(i)
            site_rows.append(
                {
                    "id": i + 1,
                    "site_id": f"B{i:06d}",
                    "name": f"测试工地{i}",
                    "kind": "construction",
                    "bureau_id": bureau_ids[i % BUREAUS],
                    "geometry_geojson": json.dumps(geometry),
                    "min_lon": x0,
                    "min_lat": y0,
                    "max_lon": x1,
                    "max_lat": y1,
                    "area_m2": 10_000.0,
                    "attributes": {},
                    "updated_at": now,
                }
            )
        for start in range(0, sites, 5000):
            session.execute(insert(Site), site_rows[start : start + 5000])
        session.commit()
        open_count = int(notices * OPEN_SHARE)
        open_states = ["issued", "acknowledged", "rectified", "overdue", "escalated"]
        for start in range(0, notices, 10_000):
            rows, events = [], []
            for i in range(start, min(notices, start + 10_000)):
                site = i % sites
                is_open = i < open_count
                state = open_states[i % len(open_states)] if is_open else "closed"
                issued = now - timedelta(days=1) if is_open else now - timedelta(days=400 - i % 300)
                deadline = (
                    issued - timedelta(hours=30)
                    if state in ("overdue", "escalated")
                    else issued + timedelta(hours=48)
                )
                rows.append(
                    {
                        "id": i + 1,
                        "number": f"GX-2000-{i + 1:07d}",
                        "site_id": site + 1,
                        "bureau_id": bureau_ids[site % BUREAUS],
                        "finding_class": "exposed_soil",
                        "state": state,
                        "text_zh": f"测试工地{site}经无人机巡查发现裸露土方，请按期整改。",
                        "text_en": f"Exposed soil found at test site {site}.",
                        "issued_at": issued,
                        "deadline": deadline,
                    }
                )
                events.append(
                    {"notice_id": i + 1, "to_state": "issued", "attachments": [], "at": issued}
                )
            session.execute(insert(Notice), rows)
            session.execute(insert(NoticeEvent), events)
            session.commit()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:  # explicit ids were inserted: move the sequences on
            for table in ("sites", "notices", "notice_events"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {notices + 1})")
                )
            connection.execute(text("ANALYZE"))
    engine.dispose()
    return {"sites": sites, "bureau": bureau_ids[0]}


@contextmanager
def serve(url: str, data_dir: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUSTPATROL_")} | {
        "DUSTPATROL_DATABASE__URL": url,
        "DUSTPATROL_PATHS__DATA_DIR": str(data_dir / "var"),
        "DUSTPATROL_PATHS__FRAMES_DIR": str(data_dir / "var" / "frames"),
        "DUSTPATROL_NOTICES__REQUIRE_CONFIRMATION": "false",
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", "from dustpatrol.cli import main; main()", "serve"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dustpatrol serve exited: {process.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dustpatrol serve did not answer /health within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _token(base: str, username: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/auth/token", data={"username": username, "password": PASSWORD}, timeout=30
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _load(
    base: str, count: int, request: Callable[[httpx.Client, int], httpx.Response]
) -> tuple[list[float], float, int]:
    """``count`` requests over CONCURRENCY threads (stopping at TIME_CAP_S); latencies in ms,
    wall time in s and the number of responses that were not 2xx."""
    local = threading.local()
    failures = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + TIME_CAP_S

    def one(i: int) -> float | None:
        nonlocal failures
        if time.monotonic() > stop_at:
            return None
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base, timeout=60)
        start = time.perf_counter()
        response = request(client, i)
        elapsed = (time.perf_counter() - start) * 1000
        if not response.is_success:
            with lock:
                failures += 1
        return elapsed

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        latencies = [ms for ms in pool.map(one, range(count)) if ms is not None]
    return latencies, time.perf_counter() - started, failures


def _row(
    backend: str, case: str, latencies: list[float], wall: float, failures: int
) -> BenchResult:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return BenchResult(
        suite="api",
        case=f"{backend}: {case}",
        unit="ms",
        median=statistics.median(ordered),
        minimum=ordered[0],
        maximum=ordered[-1],
        runs=len(ordered),
        note=(
            f"p99 {p99:.1f} ms; {len(ordered) / wall:.1f} req/s; "
            f"{CONCURRENCY} clients; {failures} failed"
        ),
    )


def _backend(
    backend: str, url: str, tmp: Path, notices: int, requests: dict[str, int]
) -> list[BenchResult]:
    started = time.perf_counter()
    seeded = seed(url, notices)
    seed_s = time.perf_counter() - started
    print(f"  {backend}: {notices:,} notices seeded in {seed_s:.1f} s", flush=True)
    results = []
    with serve(url, tmp) as base:
        bureau, analyst = _token(base, "bureau"), _token(base, "analyst")
        # The cursors of every page of the bureau's open notices, walked once untimed.
        cursors: list[str | None] = [None]
        page_url: str | None = f"{base}/notices?open=true&limit={PAGE}"
        while page_url:
            response = httpx.get(page_url, headers=bureau, timeout=60)
            response.raise_for_status()
            link = response.headers.get("link")
            page_url = link.split(">")[0].lstrip("<") if link else None
            if page_url:
                cursors.append(httpx.URL(page_url).params["cursor"])
        rng = random.Random(7)

        def list_page(client: httpx.Client, i: int) -> httpx.Response:
            cursor = cursors[0] if i % 3 == 0 else rng.choice(cursors)
            params: dict[str, str | int] = {"open": "true", "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            return client.get("/notices", params=params, headers=bureau)

        latencies, wall, failures = _load(base, requests["list"], list_page)
        results.append(
            _row(
                backend,
                f"list a bureau's open notices ({len(cursors)} pages of {PAGE})",
                latencies,
                wall,
                failures,
            )
        )
        latencies, wall, failures = _load(
            base,
            requests["ledger"],
            lambda client, _: client.get("/ledger/bureau", headers=analyst),
        )
        results.append(
            _row(
                backend,
                f"ledger per bureau over all {notices:,} notices",
                latencies,
                wall,
                failures,
            )
        )
        flight = httpx.post(
            f"{base}/flights", json={"name": "bench"}, headers=analyst, timeout=30
        ).json()["id"]

        def issue(client: httpx.Client, i: int) -> httpx.Response:
            _, (x0, y0, x1, y1) = _square(i % seeded["sites"])
            dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
            ring = [[x0 + dx, y0 + dy], [x1 - dx, y0 + dy], [x1 - dx, y1 - dy], [x0 + dx, y1 - dy]]
            feature = {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {
                    "site_id": f"B{i % seeded['sites']:06d}",
                    "class": "road_dust",
                    "area_m2": 60.0,
                    "confidence": 0.9,
                    "uncertainty_m": 1.0,
                    "evidence": [{"frame_id": f"DJI_{i:04d}", "pixel_box": [10, 10, 200, 200]}],
                },
            }
            response = client.post(
                f"/flights/{flight}/findings",
                json={"type": "FeatureCollection", "features": [feature]},
                headers=analyst,
            )
            if response.is_success and len(response.json()["notices_issued"]) != 1:
                raise RuntimeError(f"request {i} issued no notice: {response.text}")
            return response

        latencies, wall, failures = _load(base, requests["issue"], issue)
        results.append(
            _row(
                backend, "issue a notice (findings in, rules, numbering)", latencies, wall, failures
            )
        )
    results.append(
        BenchResult("api", f"{backend}: seed {notices:,} notices", "s", seed_s, seed_s, seed_s, 1)
    )
    return results
