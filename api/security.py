"""Passwords (Argon2), access tokens (short-lived HS256 JWTs) and API keys (hashed)."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import AuthenticationError

TOKEN_MINUTES = 30
API_KEY_PREFIX = "dp_"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# Checked against when the user does not exist, so an unknown name takes as long to refuse as
# a wrong password (no username oracle by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash (no such user) the same work is done
    against a dummy hash and the answer is False."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def issue_token(
    user_id: int, role: str, secret: str, minutes: int = TOKEN_MINUTES
) -> tuple[str, int]:
    """A signed token for ``user_id`` and its lifetime in seconds."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, secret, algorithm="HS256"), minutes * 60


def read_token(token: str, secret: str) -> int:
    """The user id a valid token was issued to; `AuthenticationError` otherwise. A token's
    signature is checked once per process (then remembered); its expiry on every call."""
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("the access token is not valid")
    user_id, expires = _verified(token, secret)
    if expires <= time.time():
        raise AuthenticationError("the access token has expired; log in again")
    return user_id


MAX_TOKEN_CHARS = 2000


@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> tuple[int, float]:
    """(user id, expiry as a Unix time) of a token whose signature and claims are valid."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the access token has expired; log in again") from None
    except jwt.InvalidTokenError:
        raise AuthenticationError("the access token is not valid") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject.isdecimal() or len(subject) > 18:
        raise AuthenticationError("the access token is not valid (its subject is not a user id)")
    return int(subject), float(claims["exp"])


def new_api_key() -> tuple[str, str, str]:
    """(key shown once, its prefix for lookup, its SHA-256 for storage)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:12], hash_api_key(key)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    """The token signing secret: the configured one, else one kept in ``data_dir``."""
    if configured:
        return configured
    path = data_dir / "secret_key"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret, encoding="utf-8")
    path.chmod(0o600)
    return secret
