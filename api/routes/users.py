"""Users and their API keys: managed by admins."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, RowId, SessionDep
from api.errors import ConflictError, InvalidInputError, NotFoundError
from api.models.bureaus import Bureau
from api.models.users import ApiKey, ApiKeyCreate, ApiKeyCreated, User, UserCreate, UserPublic
from api.security import hash_password, new_api_key

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, _: AdminUser) -> UserPublic:
    return UserPublic.model_validate(add_user(session, body))


def add_user(session: SessionDep, body: UserCreate) -> User:
    """Create a user; the username must be free and a bureau user's bureau must exist."""
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
    user_id: RowId, body: ApiKeyCreate, session: SessionDep, _: AdminUser
) -> ApiKeyCreated:
    if session.get(User, user_id) is None:
        raise NotFoundError(f"no user with id {user_id}")
    key, prefix, digest = new_api_key()
    record = ApiKey(user_id=user_id, prefix=prefix, key_hash=digest, label=body.label)
    session.add(record)
    session.commit()
    return ApiKeyCreated(id=record.id, label=record.label, key=key)
