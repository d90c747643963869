"""The notice service under a bounded local load, with 200,000 notices and a registry of
100,000 sites, in SQLite and in PostgreSQL: latency (p50/p99/max) and requests per second
of a bureau listing its open notices a page at a time, the ledger, the map's data for a
1 km x 1 km view, and issuing notices; each set beside the ceiling of the same server (its
cheapest authenticated endpoint, and a bare ASGI app).

The load comes from `wrk` (compiled, one thread, a fixed number of connections, a fixed
duration: it stops by itself), only to 127.0.0.1, in two placements: "2 cores" (the
service with two worker processes, wrk beside them, nothing pinned) and "split" (wrk pinned
to core 0, the service with one worker process pinned to core 1), so the generator's share
of the machine is visible. The server's CPU use (all its processes) is measured from /proc.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from api.db import make_engine, session_factory
from api.migrate import upgrade
from api.models.bureaus import Bureau
from api.models.notices import Notice, NoticeEvent
from api.models.sites import Site
from api.models.users import Role, UserCreate
from api.routes.users import add_user
from api.services.ledger import rebuild_totals
from bench.results import BenchResult

PASSWORD = "bench-password-123"
LON0, LAT0, STEP = 115.40, 36.40, 0.002
COLUMNS = 200  # sites per row of the registry's grid
BUREAUS = 10
OPEN_SHARE = 0.10
CONNECTIONS = 16
PAGE = 50
ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("wrk_report.lua")
KM_LON, KM_LAT = 1 / 89.6, 1 / 111.0  # degrees per km at 36.4 N

# Figures before this work (issue 15: one server process, 8 client threads in the bench
# process, one run), kept beside the new ones.
EARLIER = {
    ("sqlite", "list"): "p50 55 / p99 158 ms at 132 req/s",
    ("postgresql", "list"): "p50 92 / p99 290 ms at 81 req/s",
    ("sqlite", "issue"): "p99 1,200 ms",
    ("postgresql", "issue"): "p99 329 ms",
    ("sqlite", "ledger"): "2,800 ms a request",
    ("postgresql", "ledger"): "1,900 ms a request",
}


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    user: str
    p99_target_ms: float | None = None
    rps_target: float | None = None


CASES = [
    Case("hello", "bare ASGI hello (floor)", ""),
    Case("ceiling", "GET /auth/me (cheapest authenticated)", "bureau"),
    Case("list", "a bureau's open notices, a page of 50", "bureau", 30.0, 1000.0),
    Case("ledger", "ledger per bureau over all notices", "analyst", 50.0),
    Case("map", "/map/data, a 1 km x 1 km view", "analyst", 200.0),
    Case("issue", "issue a notice (findings in, rules, numbering)", "analyst", 100.0),
]


def run(quick: bool = False) -> list[BenchResult]:
    notices = 20_000 if quick else 200_000
    sites = 10_000 if quick else 100_000
    seconds = 4 if quick else 10
    wrk, reason = _wrk()
    if wrk is None:
        return [BenchResult("api", "load", "ms", 0, 0, 0, 0, note=f"skipped: {reason}")]
    results: list[BenchResult] = []
    # DP_BENCH_API_BACKENDS=postgresql (or sqlite) runs one database only
    backends = os.environ.get("DP_BENCH_API_BACKENDS", "sqlite,postgresql").split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
            results += _backend(
                "sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp), notices, sites, seconds, wrk
            )
    if "postgresql" not in backends:
        return results
    with _postgres_database() as (url, reason):
        if url is None:
            results.append(
                BenchResult("api", "postgresql", "ms", 0, 0, 0, 0, note=f"skipped: {reason}")
            )
        else:
            with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
                results += _backend("postgresql", url, Path(tmp), notices, sites, seconds, wrk)
    return results


def _wrk() -> tuple[str | None, str]:
    """The wrk load generator, installed from Debian when missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found, ""
    for command in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        subprocess.run(command, capture_output=True, check=False, timeout=600)
        found = shutil.which("wrk")
        if found:
            return found, ""
    return None, "wrk is not installed and apt-get could not install it (apt-get install wrk)"


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
    row, column = divmod(i, COLUMNS)
    lon, lat = LON0 + column * STEP, LAT0 + row * STEP
    bbox = (lon, lat, lon + STEP / 2, lat + STEP / 2)
    ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, bbox


def seed(url: str, notices: int, sites: int) -> dict[str, Any]:
    """Bureaus, users, ``sites`` sites and ``notices`` notices on the first notices/10 of
    them, with the histories real ones have: the oldest 90 % closed (issued, rectified - a
    fifth of them late -, verified, closed, last year), the newest 10 % open (issued,
    acknowledged, rectified, overdue or escalated, with their events). Bulk inserted, then
    the ledger's kept totals rebuilt as after any bulk import."""
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with_notices = max(1, notices // 10)
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
        for start in range(0, sites, 10_000):
            site_rows = []
            for i in range(start, min(sites, start + 10_000)):
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
            session.execute(insert(Site), site_rows)
        session.commit()
        closed_count = notices - int(notices * OPEN_SHARE)
        open_states = ["issued", "acknowledged", "rectified", "overdue", "escalated"]
        event_id = 0
        for start in range(0, notices, 10_000):
            rows: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for i in range(start, min(notices, start + 10_000)):
                site = i % with_notices
                if i < closed_count:
                    state = "closed"
                    issued = now - timedelta(days=400 - (i * 300) // closed_count, hours=i % 7)
                    deadline = issued + timedelta(hours=48)
                    late = i % 5 == 0
                    done = deadline + timedelta(hours=20) if late else issued + timedelta(hours=30)
                    history = [
                        ("issued", issued),
                        *([("overdue", deadline + timedelta(minutes=1))] if late else []),
                        ("rectified", done),
                        ("verified", done + timedelta(days=3)),
                        ("closed", done + timedelta(days=3, minutes=5)),
                    ]
                else:
                    state = open_states[i % len(open_states)]
                    issued = now - timedelta(days=1 if state != "escalated" else 4)
                    overdue = state in ("overdue", "escalated")
                    deadline = issued - timedelta(hours=30) if overdue else issued + timedelta(48)
                    history = [("issued", issued)]
                    if state == "acknowledged":
                        history.append(("acknowledged", issued + timedelta(hours=2)))
                    if state == "rectified":
                        history.append(("rectified", issued + timedelta(hours=20)))
                    if overdue:
                        history.append(("overdue", issued + timedelta(hours=1)))
                    if state == "escalated":
                        history.append(("escalated", issued + timedelta(hours=2)))
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
                previous = None
                for to_state, at in history:
                    event_id += 1
                    events.append(
                        {
                            "id": event_id,
                            "notice_id": i + 1,
                            "from_state": previous,
                            "to_state": to_state,
                            "attachments": [],
                            "at": at,
                        }
                    )
                    previous = to_state
            session.execute(insert(Notice), rows)
            session.execute(insert(NoticeEvent), events)
            session.commit()
        rebuild_totals(session)
        session.commit()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:  # explicit ids were inserted: move the sequences on
            for table, last in (
                ("sites", sites),
                ("notices", notices),
                ("notice_events", event_id),
            ):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last + 1})")
                )
    engine.dispose()
    if make_url(url).get_backend_name() == "postgresql":
        # As a database in service would be: vacuumed and analysed, not autovacuum's first
        # pass over a million fresh rows in the middle of the measurement; and the seeding's
        # writes flushed, not a checkpoint of a gigabyte of them during the first case (a
        # run's cheapest endpoint once had a p99 of 1.3 s, every connection stalled at once).
        maintenance = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
        with maintenance.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
            try:
                connection.execute(text("CHECKPOINT"))
            except DBAPIError as exc:  # a role without the right: say so and go on
                print(f"  no CHECKPOINT after seeding: {exc.orig}", flush=True)
        maintenance.dispose()
    return {"sites": sites, "with_notices": with_notices, "bureau": bureau_ids[0]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(
    url: str, data_dir: Path, workers: int = 1, cpus: str | None = None, hello: bool = False
) -> Iterator[tuple[str, int]]:
    """The service (or the bare ASGI app) on 127.0.0.1 with ``workers`` processes, pinned to
    ``cpus`` when given; yields its base URL and the supervisor's pid."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUSTPATROL_")} | {
        "DUSTPATROL_DATABASE__URL": url,
        "DUSTPATROL_PATHS__DATA_DIR": str(data_dir / "var"),
        "DUSTPATROL_PATHS__FRAMES_DIR": str(data_dir / "var" / "frames"),
        "DUSTPATROL_NOTICES__REQUIRE_CONFIRMATION": "false",
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
    }
    if hello:
        command = [
            *(sys.executable, "-m", "uvicorn", "bench.hello_asgi:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    else:
        command = [
            *(sys.executable, "-c", "from dustpatrol.cli import main; main()", "serve"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    # The server's output goes to a file: a pipe nobody reads blocks the server once full.
    log_path = data_dir / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the server exited: {output}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health within 90 s")
            time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.0)  # every worker up, not only the first
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (the worker processes)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _token(base: str, username: str, folder: Path) -> Path:
    response = httpx.post(
        f"{base}/auth/token", data={"username": username, "password": PASSWORD}, timeout=30
    )
    response.raise_for_status()
    path = folder / f"token-{username}"
    path.write_text(response.json()["access_token"] + "\n", encoding="utf-8")
    return path


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float
    errors: int
    cpu_share: float  # of one core, summed over the server's processes

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _wrk_run(
    wrk: str,
    url: str,
    server_pid: int,
    seconds: int,
    cpus: str | None,
    env: dict[str, str],
    connections: int = CONNECTIONS,
) -> Load:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), url]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    cpu_before, started = _cpu_seconds(server_pid), time.monotonic()
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
        env=os.environ | env,
    )
    wall = time.monotonic() - started
    cpu = _cpu_seconds(server_pid) - cpu_before
    line = next((x for x in finished.stdout.splitlines() if x.startswith("DPJSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk gave no summary: {finished.stdout[-500:]} {finished.stderr[-500:]}"
        )
    data = json.loads(line.removeprefix("DPJSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        min_ms=data.get("min_us", 0) / 1000,
        errors=errors,
        cpu_share=cpu / wall,
    )


def _list_paths(base: str, token: Path) -> list[str]:
    """The URL of every page of the bureau's open notices, walked once untimed."""
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
    paths = [f"/notices?open=true&limit={PAGE}"]
    page_url: str | None = base + paths[0]
    while page_url:
        response = httpx.get(page_url, headers=headers, timeout=60)
        response.raise_for_status()
        link = response.headers.get("link")
        page_url = link.split(">")[0].lstrip("<") if link else None
        if page_url:
            parsed = httpx.URL(page_url)
            paths.append(f"{parsed.raw_path.decode()}")
    return paths


def _map_paths(sites: int, count: int = 500) -> list[str]:
    """Random 1 km x 1 km views over the registry's grid."""
    rng = random.Random(11)
    rows = sites // COLUMNS
    width, height = COLUMNS * STEP, rows * STEP
    paths = []
    for _ in range(count):
        lon = LON0 + rng.uniform(0, max(0.0, width - KM_LON))
        lat = LAT0 + rng.uniform(0, max(0.0, height - KM_LAT))
        bbox = f"{lon:.6f},{lat:.6f},{lon + KM_LON:.6f},{lat + KM_LAT:.6f}"
        paths.append(f"/map/data?bbox={bbox}")
    return paths


def _finding_bodies(first_site: int, count: int) -> list[str]:
    """One findings upload per request, each a road-dust finding on its own site (so each
    issues a notice: the seeded notices are all exposed soil)."""
    bodies = []
    for k in range(count):
        i = first_site + k
        _, (x0, y0, x1, y1) = _square(i)
        dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
        ring = [[x0 + dx, y0 + dy], [x1 - dx, y0 + dy], [x1 - dx, y1 - dy], [x0 + dx, y1 - dy]]
        feature = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            "properties": {
                "site_id": f"B{i:06d}",
                "class": "road_dust",
                "area_m2": 60.0,
                "confidence": 0.9,
                "uncertainty_m": 1.0,
                "evidence": [{"frame_id": f"DJI_{i:06d}", "pixel_box": [10, 10, 200, 200]}],
            },
        }
        bodies.append(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return bodies


def _row(
    backend: str, placement: str, workers: int, case: Case, load: Load, ceiling: float | None
) -> BenchResult:
    met = None
    targets = []
    if case.p99_target_ms is not None:
        targets.append(f"p99 < {case.p99_target_ms:g} ms")
    if case.rps_target is not None:
        targets.append(f">= {case.rps_target:g} req/s")
    if targets:
        met = (case.p99_target_ms is None or load.p99_ms < case.p99_target_ms) and (
            case.rps_target is None or load.rps >= case.rps_target
        )
    notes = [f"p99 {load.p99_ms:.1f} ms", f"{load.rps:,.0f} req/s"]
    if ceiling:
        notes.append(f"{load.rps / ceiling:.0%} of the authenticated ceiling")
    notes += [
        f"{load.errors} errors",
        f"{workers} worker(s), server CPU {load.cpu_share:.0%} of a core",
        f"{CONNECTIONS if case.key != 'issue' else 8} connections",
    ]
    earlier = EARLIER.get((backend, case.key))
    if earlier:
        notes.append(f"before: {earlier}")
    return BenchResult(
        suite="api",
        case=f"{backend}, {placement}: {case.title}",
        unit="ms",
        median=load.p50_ms,
        minimum=load.min_ms,
        maximum=load.max_ms,
        runs=load.requests,
        target="; ".join(targets),
        meets_target=met,
        note="; ".join(notes),
    )


def _backend(
    backend: str, url: str, tmp: Path, notices: int, sites: int, seconds: int, wrk: str
) -> list[BenchResult]:
    started = time.perf_counter()
    seeded = seed(url, notices, sites)
    seed_s = time.perf_counter() - started
    print(
        f"  {backend}: {sites:,} sites and {notices:,} notices seeded in {seed_s:.1f} s", flush=True
    )
    results = [
        BenchResult("api", f"{backend}: seed {notices:,} notices", "s", seed_s, seed_s, seed_s, 1)
    ]
    files = tmp / "wrk"
    files.mkdir()
    (files / "map").write_text("\n".join(_map_paths(sites)) + "\n", encoding="utf-8")
    (files / "ledger").write_text("/ledger/bureau\n", encoding="utf-8")
    warm = max(1, seconds // 4)
    for placement, workers, server_cpus, wrk_cpus in (
        ("2 cores", 2, None, None),
        ("split", 1, "1", "0"),
    ):
        with serve("", tmp, workers, server_cpus, hello=True) as (base, pid):
            _wrk_run(wrk, base + "/", pid, warm, wrk_cpus, {})
            floor = _wrk_run(wrk, base + "/", pid, seconds, wrk_cpus, {})
        results.append(_row(backend, placement, workers, CASES[0], floor, None))
        with serve(url, tmp, workers, server_cpus) as (base, pid):
            tokens = {name: _token(base, name, files) for name in ("bureau", "analyst")}
            (files / "list").write_text(
                "\n".join(_list_paths(base, tokens["bureau"])) + "\n", encoding="utf-8"
            )
            ceiling = None
            for case in CASES[1:]:
                if case.key == "issue" and placement != "2 cores":
                    continue  # writes change the data: measured once, in the main placement
                target, env, connections = _prepare(case, base, tokens, files, seeded["sites"])
                if case.key != "issue":
                    _wrk_run(wrk, target, pid, warm, wrk_cpus, env, connections)
                load = _wrk_run(wrk, target, pid, seconds, wrk_cpus, env, connections)
                results.append(_row(backend, placement, workers, case, load, ceiling))
                print(f"    {results[-1].case}: {results[-1].note}", flush=True)
                if case.key == "ceiling":
                    ceiling = load.rps
                if case.key == "issue":
                    _check_issued(url, load, connections)
    return results


def _prepare(
    case: Case, base: str, tokens: dict[str, Path], files: Path, sites: int
) -> tuple[str, dict[str, str], int]:
    """wrk's URL, environment (for wrk_report.lua) and connections for ``case``."""
    env = {"DP_WRK_TOKEN": str(tokens[case.user])}
    if case.key == "ceiling":
        return base + "/auth/me", env, CONNECTIONS
    if case.key != "issue":
        return base, env | {"DP_WRK_PATHS": str(files / case.key)}, CONNECTIONS
    headers = {"Authorization": f"Bearer {tokens['analyst'].read_text().strip()}"}
    flight = httpx.post(
        f"{base}/flights", json={"name": "bench"}, headers=headers, timeout=30
    ).json()["id"]
    (files / "issue").write_text(f"/flights/{flight}/findings\n", encoding="utf-8")
    bodies = "\n".join(_finding_bodies(0, sites)) + "\n"
    (files / "bodies").write_text(bodies, encoding="utf-8")
    env |= {"DP_WRK_PATHS": str(files / "issue"), "DP_WRK_BODIES": str(files / "bodies")}
    return base, env, 8


def _check_issued(url: str, load: Load, connections: int) -> None:
    """Every successful findings upload issued one notice (the bench fails otherwise); the
    uploads in flight when wrk stopped were served but not counted by it."""
    engine = make_engine(url)
    with engine.connect() as connection:
        issued = connection.scalar(
            select(func.count()).select_from(Notice).where(Notice.finding_class == "road_dust")
        )
    engine.dispose()
    answered = load.requests - load.errors
    if load.errors or not answered <= (issued or 0) <= answered + connections:
        raise RuntimeError(
            f"{answered} of {load.requests} uploads answered 2xx, and {issued} notices were "
            "issued: each upload must issue one"
        )
