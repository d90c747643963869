"""Disabling users and revoking API keys: audited, refusing what would lock every admin out."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import ConflictError, NotFoundError
from api.models.users import ApiKey, Role, User
from api.services.audit import audit


def find_user(session: Session, user_id: int | None = None, username: str | None = None) -> User:
    query = select(User).where(
        User.id == user_id if user_id is not None else User.username == username
    )
    user = session.scalar(query)
    if user is None:
        raise NotFoundError(f"no user {user_id if user_id is not None else repr(username)}")
    return user


def set_active(
    session: Session, actor: User | None, user_id: int, active: bool, reason: str | None
) -> User:
    """Enable or disable ``user_id`` (no change, no audit event when it already is so). The
    last active admin cannot be disabled."""
    user = find_user(session, user_id)
    if user.active == active:
        return user
    if not active and user.role == Role.ADMIN.value:
        admins = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.active.is_(True))
        )
        if (admins or 0) <= 1:
            raise ConflictError(
                f"{user.username!r} is the last active admin: create or enable another first"
            )
    user.active = active
    audit(
        session,
        actor,
        "user.enabled" if active else "user.disabled",
        user.username,
        reason=reason,
    )
    session.commit()
    return user


def revoke_key(session: Session, actor: User | None, user_id: int, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.user_id != user_id:
        raise NotFoundError(f"user {user_id} has no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        user = session.get(User, user_id)
        audit(
            session,
            actor,
            "api_key.revoked",
            f"{user.username if user else user_id}/{key.id}",
            label=key.label,
            prefix=key.prefix,
        )
        session.commit()
    return key
