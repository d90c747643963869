"""Users and their API keys: managed by admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, RowId, SessionDep
from api.errors import ConflictError, InvalidInputError, NotFoundError
from api.models.audit import AuditEventPublic
from api.models.bureaus import Bureau
from api.models.users import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    User,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from api.security import hash_password, new_api_key
from api.services import accounts
from api.services.audit import audit, recent

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> UserPublic:
    return UserPublic.model_validate(add_user(session, body, actor=admin))


def add_user(session: SessionDep, body: UserCreate, actor: User | None = None) -> User:
    """Create a user (audited: `actor` None is the server's command line); the username must
    be free and a bureau user's bureau must exist."""
    if session.scalar(select(User).where(User.username == body.username)) is not None:
        raise ConflictError(f"user {body.username!r} exists already")
    if body.bureau_id is not None and session.get(Bureau, body.bureau_id) is None:
        raise InvalidInputError(f"no bureau with id {body.bureau_id}")
    user = User(
        username=body.username,
        password_hash=hash_password(body.password),
        role=body.role.value,
        bureau_id=body.bureau_id,
    )
    session.add(user)
    audit(session, actor, "user.created", body.username, role=body.role.value)
    try:
        session.commit()
    except IntegrityError:  # the same name created by a request running at the same moment
        session.rollback()
        raise ConflictError(f"user {body.username!r} exists already") from None
    return user


@router.get("")
def list_users(session: SessionDep, _: AdminUser) -> list[UserPublic]:
    return [
        UserPublic.model_validate(u) for u in session.scalars(select(User).order_by(User.username))
    ]


@router.post("/{user_id}/api-keys", status_code=status.HTTP_201_CREATED)
def create_api_key(
    user_id: RowId, body: ApiKeyCreate, session: SessionDep, admin: AdminUser
) -> ApiKeyCreated:
    owner = session.get(User, user_id)
    if owner is None:
        raise NotFoundError(f"no user with id {user_id}")
    key, prefix, digest = new_api_key()
    record = ApiKey(user_id=user_id, prefix=prefix, key_hash=digest, label=body.label)
    session.add(record)
    session.flush()
    audit(
        session,
        admin,
        "api_key.created",
        f"{owner.username}/{record.id}",
        label=body.label,
        prefix=prefix,
    )
    session.commit()
    return ApiKeyCreated(id=record.id, label=record.label, key=key)


@router.patch("/{user_id}")
def update_user(
    user_id: RowId, body: UserUpdate, request: Request, session: SessionDep, admin: AdminUser
) -> UserPublic:
    """Disable a user (their tokens and API keys stop working at once) or enable them again;
    audited with the reason."""
    user = accounts.set_active(session, admin, user_id, body.active, body.reason)
    request.app.state.principals.changed()
    return UserPublic.model_validate(user)


@router.get("/{user_id}/api-keys")
def list_api_keys(user_id: RowId, session: SessionDep, _: AdminUser) -> list[ApiKeyPublic]:
    if session.get(User, user_id) is None:
        raise NotFoundError(f"no user with id {user_id}")
    keys = session.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id))
    return [ApiKeyPublic.model_validate(k) for k in keys]


@router.delete("/{user_id}/api-keys/{key_id}")
def revoke_api_key(
    user_id: RowId, key_id: RowId, request: Request, session: SessionDep, admin: AdminUser
) -> ApiKeyPublic:
    """Revoke an API key: it is refused from now on (audited; revoking twice changes nothing)."""
    key = accounts.revoke_key(session, admin, user_id, key_id)
    request.app.state.principals.changed()
    return ApiKeyPublic.model_validate(key)


audit_router = APIRouter(prefix="/audit", tags=["users"])


@audit_router.get("")
def audit_log(
    session: SessionDep,
    _: AdminUser,
    action: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AuditEventPublic]:
    """Administrative acts, newest first: users disabled or enabled, API keys revoked, bureaus
    created and sites moved by imports."""
    return [AuditEventPublic.model_validate(e) for e in recent(session, action, limit)]
