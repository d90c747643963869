"""PostgreSQL: short reads cost one round trip (no transaction, no ping per request), and a
pooled connection cut while idle is replaced before a request gets it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, create_engine, select, text, type_coerce
from sqlalchemy.orm import Session

import api.db
from api.db import UtcDateTime, make_engine, session_factory
from api.deps import run_short
from tests.api.conftest import _postgres_admin_url, new_postgres_database


@pytest.fixture
def engine() -> Iterator[Engine]:
    with new_postgres_database("dp_trips") as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def _transaction_status(session: Session) -> TransactionStatus:
    driver: Any = session.connection().connection.driver_connection
    return TransactionStatus(driver.info.transaction_status)


def test_a_short_read_runs_outside_a_transaction(engine: Engine) -> None:
    def read(session: Session) -> tuple[int, TransactionStatus]:
        value = session.scalar(text("SELECT 41 + 1"))
        return int(value or 0), _transaction_status(session)

    with session_factory(engine)() as session:
        value, status = asyncio.run(run_short(session, read, session))
    assert value == 42
    # No BEGIN was sent, so no ROLLBACK is owed when the connection goes back to the pool.
    assert status is TransactionStatus.IDLE

    # Other work keeps its transaction, and the pooled connection is back to normal.
    with session_factory(engine)() as session:
        session.execute(text("SELECT 1"))
        assert _transaction_status(session) is TransactionStatus.INTRANS


def test_a_read_after_other_work_stays_in_its_transaction(engine: Engine) -> None:
    with session_factory(engine)() as session:
        session.execute(text("SELECT 1"))  # the session already holds a transaction
        api.db.read_outside_transaction(session)
        assert _transaction_status(session) is TransactionStatus.INTRANS


def test_connections_in_steady_use_are_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    sessions = session_factory(engine)
    for _ in range(5):
        with sessions() as session:
            session.execute(text("SELECT 1"))
    assert pings == []


def test_an_idle_connection_cut_by_the_server_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(engine)
    with sessions() as session:
        first_pid = session.scalar(text("SELECT pg_backend_pid()"))
    admin = create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
    finally:
        admin.dispose()
    monkeypatch.setattr(api.db, "IDLE_PING_S", 0.0)  # the pooled connection now counts as idle
    with sessions() as session:
        assert session.scalar(text("SELECT 1")) == 1
        assert session.scalar(text("SELECT pg_backend_pid()")) != first_pid


def test_short_reads_run_on_the_event_loop_unless_set_to_a_thread(engine: Engine) -> None:
    """One round trip on the loop beats the hop to a worker thread and back (see
    `api.deps.run_short`); ``database.short_reads_in_thread`` restores the hop."""

    def where(session: Session) -> tuple[str, TransactionStatus]:
        session.scalar(text("SELECT 1"))
        return threading.current_thread().name, _transaction_status(session)

    async def read(session: Session) -> tuple[str, str, TransactionStatus]:
        name, status = await run_short(session, where, session)
        return threading.current_thread().name, name, status

    with session_factory(engine)() as session:
        loop, ran, status = asyncio.run(read(session))
    assert ran == loop and status is TransactionStatus.IDLE
    with session_factory(engine, short_reads_in_thread=True)() as session:
        loop, ran, status = asyncio.run(read(session))
    assert ran != loop and status is TransactionStatus.IDLE


def test_the_queue_keeps_the_read_setting_of_the_service(tmp_path: Any) -> None:
    from api.app import create_app
    from api.db import SHORT_READS_IN_THREAD
    from dustpatrol.settings import Settings

    with new_postgres_database("dp_reads") as url:
        settings = Settings.model_validate(
            {
                "database": {"url": url, "short_reads_in_thread": True},
                "paths": {"data_dir": str(tmp_path / "var")},
                "queue": {"url": "redis://127.0.0.1:1/0"},
            }
        )
        app = create_app(settings, worker=False)
        with app.state.sessions() as session:
            assert session.info[SHORT_READS_IN_THREAD] is True
            assert "dispatch" in session.info
        app.state.engine.dispose()


def test_times_come_back_in_python_s_own_utc(engine: Engine) -> None:
    """Connections talk UTC, whatever the server's time zone, so a stored time is read as
    Python's own UTC and passed through without a conversion per value."""
    with engine.connect() as connection:  # a server set to local time, as many here are
        connection.execute(
            text(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', "
                "current_database(), 'Asia/Shanghai'); END $$"
            )
        )
        connection.commit()
    engine.dispose()
    with create_engine(engine.url).connect() as plain:
        assert plain.scalar(text("SHOW TimeZone")) == "Asia/Shanghai"
    with session_factory(engine)() as session:
        assert session.scalar(text("SHOW TimeZone")) == "UTC"
        moment = session.scalar(
            select(type_coerce(text("TIMESTAMPTZ '2026-12-06 08:00:00+08'"), UtcDateTime))
        )
    assert moment is not None and moment.tzinfo is UTC
    assert moment == datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
