"""What makes the service fast must not make it wrong: the ledger's kept totals against a
count from scratch, the open-notice partial indexes really used, users and keys held per
process yet refused at once when disabled, the background work in one process of several."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, select, text, update
from typer.testing import CliRunner

from api.app import ROUTERS, BackgroundLease
from api.db import UtcDateTime, as_utc, make_engine, session_factory, write_turn
from api.migrate import upgrade
from api.models.notices import BureauLedgerTotal, LedgerTotal, Notice
from api.models.users import User
from api.services import ledger as ledger_service
from api.services.mapdata import map_data
from api.services.notices import list_notices, mark_overdue, settle_deadlines
from bench.api_load import seed  # the benchmark's histories (a tenth of them, below)
from dustpatrol.cli import app as cli
from dustpatrol.settings import Settings
from tests.api.conftest import PASSWORD, World, new_postgres_database
from tests.api.test_notices_api import _session, issued_notice, move
from tests.api.test_sites_api import D, registry_file, square, upload
from tests.api.test_sites_api import imported as imported  # fixture

EARLY = datetime(2000, 1, 1, tzinfo=UTC)


def _rows(rows: list[ledger_service.LedgerRow]) -> list[dict[str, object]]:
    return [row.public() for row in rows]


def _both_ways(session: Any, user: User, by: str, now: datetime) -> tuple[Any, Any]:
    kept = ledger_service.ledger(session, user, by, now=now)
    counted = ledger_service.ledger(session, user, by, since=EARLY, now=now)
    return _rows(kept), _rows(counted)


def test_kept_ledger_totals_match_a_count_from_scratch(imported: World) -> None:
    on_time = issued_notice(imported, "S1")
    late = issued_notice(imported, "S2")
    waiting = issued_notice(imported, "S3")
    move(imported, "housing", on_time, "acknowledged")
    move(imported, "housing", on_time, "rectified", "swept")
    with _session(imported) as session:
        notice = session.scalars(select(Notice).where(Notice.number == late)).one()
        deadline = as_utc(notice.deadline)
        assert mark_overdue(session, imported.settings, deadline + timedelta(minutes=5)) == [
            late,
            waiting,
        ]
    move(imported, "housing", late, "rectified", "late, but done")
    move(imported, "analyst", on_time, "verified")
    second = issued_notice(imported, "S1")  # S1's first is verified (closed): a new one opens
    with _session(imported) as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        housing = session.scalars(select(User).where(User.username == "housing")).one()
        for now in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=30)):
            for by in ("bureau", "site"):
                kept, counted = _both_ways(session, admin, by, now)
                assert kept == counted, (by, now)
            kept, counted = _both_ways(session, housing, "bureau", now)
            assert kept == counted
        before = sorted(
            (t.site_id, t.bureau_key, t.issued, t.open, t.rectified, t.on_time, t.settled)
            for t in session.scalars(select(LedgerTotal))
        )
        ledger_service.rebuild_totals(session)
        session.commit()
        after = sorted(
            (t.site_id, t.bureau_key, t.issued, t.open, t.rectified, t.on_time, t.settled)
            for t in session.scalars(select(LedgerTotal))
        )
        assert before == after
        per_bureau: dict[int, int] = {}
        for total in session.scalars(select(LedgerTotal)):
            per_bureau[total.bureau_key] = per_bureau.get(total.bureau_key, 0) + total.issued
        assert per_bureau == {
            total.bureau_key: total.issued for total in session.scalars(select(BureauLedgerTotal))
        }
        rows = {r["key"]: r for r in _rows(ledger_service.ledger(session, admin, "site"))}
    assert second != on_time
    assert rows["S1"]["issued"] == 2 and rows["S1"]["rectified"] == 1
    assert rows["S2"]["overdue"] == 1 and rows["S2"]["rectified"] == 1
    assert rows["S3"]["open"] == 1 and rows["S3"]["overdue"] == 1


def test_a_deadline_passing_counts_before_housekeeping_marks_it(imported: World) -> None:
    number = issued_notice(imported, "S3")
    with _session(imported) as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        later = datetime.now(UTC) + timedelta(days=3)  # road dust: a 4 h deadline
        kept, counted = _both_ways(session, admin, "bureau", later)
        assert kept == counted
        assert kept[0]["overdue"] == 1 and kept[0]["due"] == 1
        assert session.scalars(select(Notice.state).where(Notice.number == number)).one() == (
            "issued"
        )


def _notice_statements(engine: Any) -> list[tuple[str, Any]]:
    """The statements (and parameters) ``engine`` runs on the notices from now on."""
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM notices" in statement:
            seen.append((statement, parameters))

    return seen


def test_the_open_inbox_reads_the_partial_index(imported: World) -> None:
    if not imported.settings.database.url.startswith("sqlite"):
        pytest.skip("the query plan is SQLite's")
    issued_notice(imported, "S1")
    engine = make_engine(imported.settings.database.url)
    with engine.begin() as connection:  # a year of closed notices around the open one
        site, bureau = connection.execute(text("SELECT id, bureau_id FROM sites")).first()  # type: ignore[misc]
        connection.execute(
            text(
                "INSERT INTO notices (number, site_id, bureau_id, finding_class, state, "
                "text_zh, text_en, issued_at, deadline, went_overdue) VALUES "
                "(:number, :site, :bureau, 'exposed_soil', 'closed', '', '', :at, :at, 0)"
            ),
            [
                {"number": f"OLD-{i}", "site": site, "bureau": bureau, "at": datetime.now(UTC)}
                for i in range(3000)
            ],
        )
    seen = _notice_statements(engine)

    with session_factory(engine)() as session:
        housing = session.scalars(select(User).where(User.username == "housing")).one()
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        for user, index in ((housing, "ix_notices_open_bureau_id"), (admin, "ix_notices_open_id")):
            seen.clear()
            page, _ = list_notices(session, user, open_only=True, limit=50, cursor=None)
            assert len(page) == 1
            session.execute(text("ANALYZE"))
            statement, parameters = seen[0]
            plan = " ".join(
                str(row[-1])
                for row in session.connection().exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", parameters
                )
            )
            assert index in plan, plan
    engine.dispose()


def test_migration_keeps_the_history_of_existing_notices(database_url: str) -> None:
    upgrade(database_url, "0008")
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO bureaus (id, name, created_at) VALUES (1, 'b', :now)"), {"now": now}
        )
        connection.execute(
            text(
                "INSERT INTO sites (id, site_id, geometry_geojson, min_lon, min_lat, max_lon, "
                "max_lat, area_m2, attributes, updated_at, bureau_id) VALUES "
                "(1, 'S1', '{}', 0, 0, 1, 1, 1, '{}', :now, 1)"
            ),
            {"now": now},
        )
        # state, events an hour apart from the issue, deadline hours after the issue
        history = {
            1: ("closed", ["issued", "rectified", "verified", "closed"], 2),  # on time
            2: ("overdue", ["issued", "overdue"], 4),
            3: ("acknowledged", ["issued", "overdue", "rectified", "acknowledged"], 1),  # late
            4: ("rejected", ["issued", "rejected"], 5),
            5: ("closed", ["issued", "closed"], 100),  # old data: closed unrectified, not due
        }
        for notice_id, (state, events, hours) in history.items():
            issued = now - timedelta(hours=48)
            connection.execute(
                text(
                    "INSERT INTO notices (id, number, site_id, bureau_id, finding_class, state, "
                    "text_zh, text_en, issued_at, deadline) VALUES "
                    "(:id, :number, 1, 1, :class, :state, '', '', :issued, :deadline)"
                ),
                {
                    "id": notice_id,
                    "number": f"N{notice_id}",
                    "class": "exposed_soil" if notice_id == 3 else "road_dust",  # one open each
                    "state": state,
                    "issued": issued,
                    "deadline": issued + timedelta(hours=hours),
                },
            )
            for step, to_state in enumerate(events):
                connection.execute(
                    text(
                        "INSERT INTO notice_events (notice_id, to_state, attachments, at) "
                        "VALUES (:id, :to, '[]', :at)"
                    ),
                    {"id": notice_id, "to": to_state, "at": issued + timedelta(hours=step)},
                )
    engine.dispose()
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as session:
        admin = User(id=0, username="x", password_hash="", role="admin", active=True)
        kept, counted = _both_ways(session, admin, "site", datetime.now(UTC))
        assert kept == counted
        (row,) = kept
        assert (row["issued"], row["rectified"], row["on_time"], row["overdue"]) == (4, 2, 1, 2)
        assert row["open"] == 2
        # Notice 5's deadline passes: counted at once, then settled by the housekeeping.
        later = datetime.now(UTC) + timedelta(days=10)
        kept, counted = _both_ways(session, admin, "site", later)
        assert kept == counted and kept[0]["overdue"] == 3
        assert settle_deadlines(session, later) == 1
        assert settle_deadlines(session, later) == 0
        kept, counted = _both_ways(session, admin, "site", later)
        assert kept == counted and kept[0]["overdue"] == 3
        total = session.scalars(select(LedgerTotal)).one()
        assert (total.overdue, total.settled) == (3, 4)  # from the totals, not the clock
    engine.dispose()


def test_a_disabled_user_is_refused_at_once_by_every_process(imported: World) -> None:
    headers = imported.login("housing")
    assert imported.client.get("/notices", headers=headers).status_code == 200  # now held
    environment = {
        "DUSTPATROL_DATABASE__URL": imported.settings.database.url,
        "DUSTPATROL_PATHS__DATA_DIR": str(imported.settings.paths.data_dir),
    }
    result = CliRunner().invoke(cli, ["users", "disable", "housing"], env=environment)
    assert result.exit_code == 0, result.output
    refused = imported.client.get("/notices", headers=headers)
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]


def test_a_change_from_another_machine_is_seen_within_the_hold_time(imported: World) -> None:
    principals = imported.client.app.state.principals  # type: ignore[attr-defined]
    principals.ttl_s = 0.5
    headers = imported.login("housing")
    assert imported.client.get("/notices", headers=headers).status_code == 200
    with _session(imported) as session:  # straight into the database: no stamp touched
        session.execute(update(User).where(User.username == "housing").values(active=False))
        session.commit()
    assert imported.client.get("/notices", headers=headers).status_code == 200  # still held
    time.sleep(0.6)
    assert imported.client.get("/notices", headers=headers).status_code == 401


def test_background_work_runs_in_one_process_and_moves_on(settings: Settings) -> None:
    upgrade(settings.database.url)
    sessions = session_factory(make_engine(settings.database.url))
    lock = settings.paths.data_dir / "background.lock"
    first = BackgroundLease(lock, sessions, settings)
    second = BackgroundLease(lock, sessions, settings, retry_s=0.1)
    first.start()
    second.start()
    try:
        assert [first.held, second.held] == [True, False]
        first.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _holds(second):
            time.sleep(0.05)
        assert _holds(second)
        assert lock.read_text().strip() == str(os.getpid())
    finally:
        first.stop()
        second.stop()


def _holds(lease: BackgroundLease) -> bool:
    return lease.held


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_serve_with_two_worker_processes(tmp_path: Path) -> None:
    port = _free_port()
    data = tmp_path / "var"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DUSTPATROL_")} | {
        "DUSTPATROL_DATABASE__URL": f"sqlite:///{tmp_path}/dp.db",
        "DUSTPATROL_PATHS__DATA_DIR": str(data),
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-c", "from dustpatrol.cli import main; main()", "serve"),
            *("--port", str(port), "--workers", "2"),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("wb"),  # a file: an unread pipe could fill
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        workers = _children(server.pid)
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            workers = _children(server.pid)
        token = httpx.post(
            f"{base}/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=10
        ).json()["access_token"]
        for _ in range(10):  # both processes answer (the kernel spreads the connections)
            answer = httpx.get(
                f"{base}/notices", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert answer.status_code == 200
        lock = data / "background.lock"
        while time.monotonic() < deadline and not (lock.is_file() and lock.read_text().strip()):
            time.sleep(0.2)  # the file exists a moment before its holder has written its pid
        holder = int(lock.read_text().strip() or 0)
        assert len([w for w in workers if Path(f"/proc/{w}").exists()]) >= 2
        assert holder in workers  # one of the two, not both, not the supervisor
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_spatial_index_follows_sites_that_move(imported: World, tmp_path: Path) -> None:
    headers = imported.login("analyst")

    def in_view(i: int) -> list[str]:
        (x0, y0, x1, y1) = square(i).bounds  # type: ignore[attr-defined]
        bbox = f"{x0 + D / 4},{y0 + D / 4},{x1 - D / 4},{y1 - D / 4}"
        answer = imported.client.get("/sites", params={"bbox": bbox}, headers=headers)
        assert answer.status_code == 200, answer.text
        return sorted(site["site_id"] for site in answer.json())

    assert (in_view(0), in_view(1), in_view(9)) == (["S1"], ["S2"], [])
    moved = registry_file(
        tmp_path,
        [
            ("S1", "东关工地", "县住房和城乡建设局", square(0)),
            ("S2", "西关工地", "县住房和城乡建设局", square(9)),  # moved east
            ("S3", "城关饭店", "县城市管理局", square(5)),
        ],
    )
    assert upload(imported, moved, "admin").status_code == 200  # type: ignore[attr-defined]
    assert (in_view(0), in_view(1), in_view(9)) == (["S1"], [], ["S2"])
    if imported.settings.database.url.startswith("sqlite"):
        with _session(imported) as session:
            indexed = session.execute(text("SELECT count(*) FROM sites_rtree")).scalar_one()
            plan = " ".join(
                str(row[-1])
                for row in session.execute(
                    text(
                        "EXPLAIN QUERY PLAN SELECT id FROM sites WHERE id IN (SELECT id FROM "
                        "sites_rtree WHERE max_lon >= 1 AND min_lon <= 2 AND max_lat >= 1 "
                        "AND min_lat <= 2)"
                    )
                )
            )
        assert indexed == 3 and "VIRTUAL TABLE INDEX" in plan, plan


def test_sqlite_writers_take_turns(settings: Settings) -> None:
    if not settings.database.url.startswith("sqlite"):
        pytest.skip("PostgreSQL writers lock rows, not the database")
    upgrade(settings.database.url)
    sessions = session_factory(make_engine(settings.database.url))
    done = threading.Event()

    def second_writer() -> None:
        with sessions() as session, write_turn(session):
            done.set()

    with sessions() as session, write_turn(session):
        other = threading.Thread(target=second_writer)
        other.start()
        assert not done.wait(0.3)  # the second waits for its turn
    assert done.wait(5)  # and gets it as soon as the first is done
    other.join()


def test_a_bureaus_inbox_page_is_an_index_only_scan_on_postgresql() -> None:
    """On PostgreSQL a page of a bureau's open notices is read from the bureau's open index
    alone. Before, that index held only (bureau_id, id): among ten bureaus' interleaved open
    notices the planner preferred the staff index and filtered out nine rows of ten."""
    with new_postgres_database() as url:
        seeded = seed(url, 20_000, 2_000)
        engine = make_engine(url)
        seen = _notice_statements(engine)

        with session_factory(engine)() as session:
            bureau = session.scalars(select(User).where(User.username == "bureau")).one()
            assert bureau.bureau_id == seeded["bureau"]
            first, cursor = list_notices(session, bureau, open_only=True, limit=50, cursor=None)
            page, _ = list_notices(session, bureau, open_only=True, limit=50, cursor=cursor)
            assert len(first) == len(page) == 50
            statement, parameters = seen[-1]
            plan = "\n".join(
                str(row[0])
                for row in session.connection().exec_driver_sql(f"EXPLAIN {statement}", parameters)
            )
        engine.dispose()
    assert "Index Only Scan using ix_notices_open_bureau_id" in plan, plan


def test_the_map_reads_no_notice_texts(imported: World) -> None:
    """A map view lists each site's notices by number, class and state: it reads those
    columns, not the notices' Chinese and English texts (before, every notice of every site
    in view was loaded whole: a third of a view's time on PostgreSQL)."""
    number = issued_notice(imported, "S1")
    analyst = imported.login("analyst")
    engine = make_engine(imported.settings.database.url)
    seen = _notice_statements(engine)
    with session_factory(engine)() as session:
        user = session.scalars(select(User).where(User.username == "analyst")).one()
        data = map_data(session, user)
    engine.dispose()
    notices = [n for f in data["sites"]["features"] for n in f["properties"]["notices"]]
    assert {"number": number, "class": "road_dust", "state": "issued"} in notices
    assert seen
    assert not [s for s, _ in seen if "text_zh" in s or "text_en" in s]
    # the same through the API
    assert imported.client.get("/map/data", headers=analyst).status_code == 200


def test_no_route_of_one_router_takes_a_path_of_another() -> None:
    """The routers are included most requested first (routes are matched one by one, in
    order); that is safe only while no route of one router matches a path of another's."""
    from fastapi.routing import APIRoute

    routes = [
        (index, route)
        for index, router in enumerate(ROUTERS)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(routes) > 40
    for index, route in routes:
        # a path this route serves, each parameter given a value any parameter accepts
        sample = re.sub(r"\{[^}]+\}", "1", route.path)
        assert route.path_regex.fullmatch(sample), route.path
        for other_index, other in routes:
            shared = (other.methods or set()) & (route.methods or set())
            if other_index != index and shared:
                assert not other.path_regex.fullmatch(sample), (
                    f"{' '.join(sorted(shared))} {sample} is matched by {other.path} too"
                )


def test_sqlite_times_are_read_as_aware_utc_in_any_form_stored(tmp_path: Path) -> None:
    """SQLite keeps times as text; they are read in one parse with their UTC offset (the
    list reads a hundred a page). What a write through SQLAlchemy stores, text without a
    fraction of a second (written by SQL of its own), and text carrying an offset all come
    back as the same aware instants in Python's own UTC."""
    engine = make_engine(f"sqlite:///{tmp_path / 'times.db'}")
    times = Table(
        "times", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    times.create(engine)
    written = datetime(2026, 12, 6, 16, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    instant = datetime(2026, 12, 6, 8, 30, 15, 123456, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(times.insert(), [{"id": 1, "at": written}, {"id": 2, "at": None}])
        stored = connection.scalar(text("SELECT at FROM times WHERE id = 1"))
        assert stored == "2026-12-06 08:30:15.123456"  # how SQLAlchemy writes it: UTC, naive
        for row, text_value in enumerate(
            ("2026-12-06 08:30:15", "2026-12-06 16:30:15.123456+08:00"), start=3
        ):
            connection.execute(
                text("INSERT INTO times VALUES (:id, :at)"), {"id": row, "at": text_value}
            )
    with engine.connect() as connection:
        read = dict(connection.execute(select(times.c.id, times.c.at)).all())
    assert read == {1: instant, 2: None, 3: instant.replace(microsecond=0), 4: instant}
    assert all(moment.tzinfo is UTC for moment in read.values() if moment is not None)
    engine.dispose()
