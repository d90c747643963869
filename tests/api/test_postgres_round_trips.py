"""PostgreSQL: short reads cost one round trip (no transaction, no ping per request), and a
pooled connection cut while idle is replaced before a request gets it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import api.db
from api.db import make_engine, session_factory
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
