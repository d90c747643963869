"""Dependencies: a database session per request, the current user, role checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.db import SHORT_READS_IN_THREAD, read_outside_transaction
from api.errors import AuthenticationError, ForbiddenError
from api.models.users import ApiKey, Role, User
from api.principals import KeyRecord, Principals
from api.problems import described_pattern
from api.security import hash_api_key, read_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request, made and closed on the event loop (no thread hop): making
    one does no I/O (a connection is taken on first use, in the endpoint's thread); closing
    rolls back whatever is left and returns the connection to the pool."""
    with request.app.state.sessions() as session:
        yield session  # closing ends the transaction and returns the connection: brief


SessionDep = Annotated[Session, Depends(get_session)]
T = TypeVar("T")


async def run_short(session: Session, function: Callable[..., T], *args: Any) -> T:
    """Run a short, bounded read (one indexed query; it must write nothing) for an async route,
    on the event loop: with SQLite (a local file) and, by default, with PostgreSQL too, where
    it runs outside a transaction (one round trip). The hop to a worker thread and back costs
    more than a local round trip: measured with 2 workers on 2 cores, a bureau's notice list
    went from ~380 to ~750 requests/s with its p99 from 130-180 ms to 47-60 ms. The price: a
    stalled query (a lock, a checkpoint, a distant server) holds up the other requests of its
    worker process. With one worker, or a database across a network,
    ``database.short_reads_in_thread`` moves PostgreSQL's reads to a worker thread (with one
    worker on its own core that was faster: ~370 against ~290 requests/s)."""
    if session.get_bind().dialect.name == "sqlite":
        return function(*args)

    def outside_transaction() -> T:
        read_outside_transaction(session)
        return function(*args)

    if session.info.get(SHORT_READS_IN_THREAD):
        return await run_in_threadpool(outside_transaction)
    return outside_transaction()


async def get_current_user(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> User:
    """The caller, from a bearer token or an API key. Users and keys are held by the process
    for a few seconds (`api.principals`), so most requests reach the database only for
    their own work."""
    principals: Principals = request.app.state.principals
    user: User | None = None
    if token:
        user = await _user(principals, session, read_token(token, request.app.state.secret))
    elif api_key:
        key_hash = hash_api_key(api_key)
        held, record = principals.held_key(key_hash)
        if not held:
            record = await run_in_threadpool(
                principals.load_key, key_hash, lambda: _key_record(session, key_hash)
            )
        if record is None:
            raise AuthenticationError("unknown API key")
        if record.revoked:
            raise AuthenticationError("this API key was revoked: ask an admin for a new one")
        user = await _user(principals, session, record.user_id)
    else:
        raise AuthenticationError("log in at /auth/token or send an X-API-Key header")
    if user is None or not user.active:
        raise AuthenticationError("the user does not exist or is disabled")
    return user


async def _user(principals: Principals, session: Session, user_id: int) -> User | None:
    """The user as held by the process, or read from the database (in a worker thread)."""
    held, user = principals.held_user(user_id)
    if held:
        return user
    return await run_in_threadpool(
        principals.load_user, user_id, lambda: session.get(User, user_id)
    )


def _key_record(session: Session, key_hash: str) -> KeyRecord | None:
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return None if record is None else KeyRecord(record.user_id, record.revoked_at is not None)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    """A dependency that lets only ``roles`` through."""
    allowed = {role.value for role in roles}

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise ForbiddenError(f"this needs one of the roles {', '.join(sorted(allowed))}")
        return user

    return check


AdminUser = Annotated[User, Depends(require_roles(Role.ADMIN))]
StaffUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.ANALYST, Role.INSPECTOR))]


# Row ids in paths: positive and within a 64-bit integer (SQLite's and PostgreSQL's bigint),
# so an absurd id is a 422 that names it, never an overflow inside the database driver.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]
_DEGREES = r"-?\d{1,3}(\.\d{1,17})?"
BBox = Annotated[
    str | None,
    Query(
        pattern=described_pattern(
            f"^{_DEGREES},{_DEGREES},{_DEGREES},{_DEGREES}$",
            "min_lon,min_lat,max_lon,max_lat in decimal degrees, e.g. 115.45,36.47,115.46,36.48",
        ),
        description="min_lon,min_lat,max_lon,max_lat in degrees (WGS 84): only sites in view",
    ),
]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]
