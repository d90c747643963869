"""Who is calling, without a database round trip on every request.

A request's token names a user id; its API key a key hash. Both are looked up in the
database once and then kept in this process for a few seconds. Whatever disables a user or
revokes a key calls `changed`, which clears this process's copy and touches a stamp file in
the data folder; every other server process on the machine sees the new stamp on its next
request and forgets its copy too. Processes on other machines (sharing only the database)
forget theirs within ``ttl_s``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from api.models.users import User

STAMP_NAME = "auth-changed"
DEFAULT_TTL_S = 5.0
MAX_ENTRIES = 10_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    user_id: int
    revoked: bool


class Principals:
    """A short-lived, process-local copy of users (by id) and API keys (by hash)."""

    def __init__(self, data_dir: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.stamp = data_dir / STAMP_NAME
        self.ttl_s = ttl_s
        self._users: dict[int, tuple[float, User | None]] = {}
        self._keys: dict[str, tuple[float, KeyRecord | None]] = {}
        self._seen_stamp = self._read_stamp()
        self._lock = threading.Lock()

    def held_user(self, user_id: int) -> tuple[bool, User | None]:
        """(True, the user or None if there is none) when held and fresh, else (False, None)."""
        return self._held(self._users, user_id)

    def load_user(self, user_id: int, load: Callable[[], User | None]) -> User | None:
        """``load()`` the user (blocking: the database) and hold a detached copy."""
        seen = self._read_stamp()
        return self._store(self._users, user_id, _detached(load()), seen)

    def held_key(self, key_hash: str) -> tuple[bool, KeyRecord | None]:
        return self._held(self._keys, key_hash)

    def load_key(self, key_hash: str, load: Callable[[], KeyRecord | None]) -> KeyRecord | None:
        seen = self._read_stamp()
        return self._store(self._keys, key_hash, load(), seen)

    def fresh(self) -> bool:
        """Whether every held entry may still be used: forget all if another process said
        that users or keys changed since."""
        stamp = self._read_stamp()
        if stamp == self._seen_stamp:
            return True
        with self._lock:
            self._users.clear()
            self._keys.clear()
            self._seen_stamp = stamp
        return False

    def changed(self) -> None:
        """A user or key changed here: forget at once, and tell the other processes."""
        changed(self.stamp.parent)
        self.fresh()

    def _held(self, table: dict[K, tuple[float, V]], key: K) -> tuple[bool, V | None]:
        if not self.fresh():
            return False, None
        held = table.get(key)
        if held is not None and held[0] > time.monotonic():
            return True, held[1]
        return False, None

    def _store(self, table: dict[K, tuple[float, V]], key: K, value: V, seen: int) -> V:
        """Hold ``value`` unless users or keys changed while it was being read."""
        if self._read_stamp() != seen:
            return value
        with self._lock:
            if len(table) >= MAX_ENTRIES:
                table.clear()
            table[key] = (time.monotonic() + self.ttl_s, value)
        return value

    def _read_stamp(self) -> int:
        try:
            return self.stamp.stat().st_mtime_ns
        except FileNotFoundError:
            return 0


def changed(data_dir: Path) -> None:
    """Say that a user or API key changed: every server process using ``data_dir`` forgets
    what it holds before its next request."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = data_dir / STAMP_NAME
    try:
        previous = stamp.stat().st_mtime_ns
    except FileNotFoundError:
        previous = 0
    stamp.touch()
    # Two changes within the file system's time resolution must still differ.
    now = time.time_ns()
    os.utime(stamp, ns=(now, max(now, previous + 1)))


def _detached(user: User | None) -> User | None:
    """A copy of ``user`` that belongs to no session, safe to hand to any request."""
    if user is None:
        return None
    return User(
        id=user.id,
        username=user.username,
        password_hash="",
        role=user.role,
        bureau_id=user.bureau_id,
        active=user.active,
        created_at=user.created_at,
    )
