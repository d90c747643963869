"""Login throttling: failed passwords are counted per user name and per client address; past
a limit within the window, further tries are refused with 429 and ``Retry-After`` before any
password is checked, for a lock time that doubles with each lock (up to a ceiling). A correct
password clears the user name's count. Counts live in the database, so every API process
enforces the same limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import as_utc
from api.errors import TooManyRequestsError
from api.models.users import LoginThrottle


@dataclass(frozen=True)
class ThrottleRules:
    per_user: int = 5  # failures per user name within the window before it locks
    per_address: int = 20  # failures from one address within the window
    window_s: float = 900.0
    lock_s: float = 60.0  # first lock; doubled by each further lock, up to max_lock_s
    max_lock_s: float = 900.0


def _keys(username: str, address: str | None) -> list[str]:
    keys = [f"user:{username.lower()[:150]}"]
    if address:
        keys.append(f"addr:{address[:100]}")
    return keys


def check(
    session: Session, username: str, address: str | None, now: datetime | None = None
) -> None:
    """Refuse (429, with the seconds to wait) while the name or the address is locked."""
    now = now or datetime.now(UTC)
    rows = session.scalars(
        select(LoginThrottle).where(LoginThrottle.key.in_(_keys(username, address)))
    )
    waits = [
        (as_utc(row.locked_until) - now).total_seconds()
        for row in rows
        if row.locked_until is not None and as_utc(row.locked_until) > now
    ]
    if waits:
        seconds = math.ceil(max(waits))
        raise TooManyRequestsError(
            f"too many failed logins for this user name or from this address: try again in "
            f"{seconds} s (an admin can reset a forgotten password)",
            retry_after=seconds,
        )


def failed(
    session: Session,
    rules: ThrottleRules,
    username: str,
    address: str | None,
    now: datetime | None = None,
) -> None:
    """Count a failed login against the name and the address (committed at once, so the
    count survives the error response)."""
    now = now or datetime.now(UTC)
    for key in _keys(username, address):
        limit = rules.per_user if key.startswith("user:") else rules.per_address
        for _attempt in range(2):  # a row created by a concurrent failure: count again
            try:
                _count(session, rules, key, limit, now)
                session.commit()
                break
            except IntegrityError:
                session.rollback()


def _count(session: Session, rules: ThrottleRules, key: str, limit: int, now: datetime) -> None:
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        session.add(LoginThrottle(key=key, failures=1, window_start=now))
        session.flush()
        return
    if now - as_utc(row.window_start) > timedelta(seconds=rules.window_s):
        row.failures, row.window_start = 0, now
    row.failures += 1
    if row.failures >= limit:
        locks = row.failures - limit  # each failure past the limit doubles the lock
        seconds = min(rules.lock_s * 2 ** min(locks, 20), rules.max_lock_s)
        row.locked_until = now + timedelta(seconds=seconds)


def succeeded(session: Session, username: str) -> None:
    """A correct password clears the user name's count (not the address's)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == _keys(username, None)[0]))
    session.commit()
