"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """Declarative base of every table."""


def make_engine(url: str, echo: bool = False, sqlite_synchronous: str = "normal") -> Engine:
    """An engine for ``url``; SQLite files get WAL, foreign keys, a busy timeout and
    ``sqlite_synchronous`` (see `DatabaseSettings`: "normal" syncs the log at checkpoints,
    not at every commit)."""
    if sqlite_synchronous not in ("normal", "full"):
        raise ValueError(
            f"sqlite_synchronous must be 'normal' or 'full', not {sqlite_synchronous!r}"
        )
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            # Reads through a memory map (no read() call per page) and a larger page cache:
            # a page of the inbox touches ~150 scattered pages of a large database.
            cursor.execute("PRAGMA mmap_size=268435456")
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.close()

        return engine
    engine = create_engine(url, echo=echo)
    _ping_after_idle(engine)

    @event.listens_for(engine, "connect")
    def _utc_session(connection: Any, _record: Any) -> None:
        # Times come back in the session's time zone; in UTC psycopg gives them Python's own
        # UTC, which `UtcDateTime` then passes through (a page of notices holds a hundred).
        connection.execute("SET TIME ZONE 'UTC'")
        connection.commit()

    return engine


# A pooled PostgreSQL connection idle longer than this is tested before use.
IDLE_PING_S = 5.0


def _ping_after_idle(engine: Engine) -> None:
    """Test a pooled connection before use only when it has been idle a while.

    SQLAlchemy's ``pool_pre_ping`` tests every checkout: a round trip per request, a quarter
    of a short read's time. A connection in steady use has just proved itself; one that sat
    idle may have been cut (a server restart, a firewall's timeout) and is tested, and
    replaced when dead, before a request gets it. A server restart under load fails the
    requests in flight once; the pool then drops all its connections (disconnect detection).
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _test_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # no round trip unless the ping opened a transaction
        except Exception as error:  # any failure: the pool retries with a new connection
            raise exc.DisconnectionError(f"a pooled connection was dead: {error}") from error


def read_outside_transaction(session: Session) -> None:
    """Let the session's next reads run without a transaction on PostgreSQL (autocommit):
    a one-statement read then costs one round trip, not three (BEGIN, the query, ROLLBACK).
    Only for work that writes nothing, and only before the session has its connection
    (afterwards, and on SQLite, this does nothing); each statement sees its own snapshot."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@contextmanager
def write_turn(session: Session) -> Iterator[None]:
    """Wait for this writer's turn on SQLite (one writer at a time, across the server's
    processes): a lock file next to the database, waited for in the kernel, which wakes the
    next writer the moment the last one commits. Without it concurrent writers spin in
    SQLite's busy handler, which sleeps up to 100 ms between tries: a long tail of waits.
    PostgreSQL writers need no turn (row locks); the context does nothing there."""
    engine = session.get_bind().engine
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def optimize(session: Session) -> None:
    """Keep the query planner's statistics fresh. SQLite gathers none by itself, and without
    them it may pass over a partial index (a bureau's open notices) for a worse one;
    ``PRAGMA optimize`` analyses the tables that need it. PostgreSQL's autovacuum does this."""
    if session.get_bind().dialect.name == "sqlite":
        # A sampled analysis (SQLite's advice): milliseconds, not a write lock held for
        # seconds over a large database while logins wait.
        session.execute(text("PRAGMA analysis_limit=400"))
        session.execute(text("PRAGMA optimize"))
        session.commit()


def as_utc(moment: datetime) -> datetime:
    """A stored time as timezone-aware UTC: SQLite hands back naive datetimes for timezone
    columns (we only ever store UTC), PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# `Session.info` key: run short reads on PostgreSQL in a worker thread (see `api.deps.run_short`)
SHORT_READS_IN_THREAD = "short_reads_in_thread"


def session_factory(engine: Engine, *, short_reads_in_thread: bool = False) -> sessionmaker[Any]:
    return sessionmaker(
        engine, expire_on_commit=False, info={SHORT_READS_IN_THREAD: short_reads_in_thread}
    )


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime column on every database: values are stored in UTC and
    come back aware (SQLite alone would return them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLite keeps the time as text in UTC ("2026-12-06 17:40:00.123456"): read with its
        # offset in one C call, 6x faster than parsing it naive and attaching UTC (a list page
        # reads a hundred times).
        return _sqlite_utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # PostgreSQL answers in the session's time zone (UTC on our connections): bring it
        # back to UTC.
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:  # stored in UTC, read back naive
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_utc(value: str | datetime | None) -> datetime | None:
    """A time SQLite stored as text, as aware UTC (text carrying an offset of its own too)."""
    if value is None:
        return None
    if isinstance(value, datetime):  # a connection set to parse times itself
        return as_utc(value).astimezone(UTC)
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:
        return as_utc(datetime.fromisoformat(value)).astimezone(UTC)
