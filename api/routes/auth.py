"""OAuth2 password login issuing short-lived JWTs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from api.deps import CurrentUser, SessionDep
from api.errors import AuthenticationError
from api.models.users import Token, User, UserPublic
from api.security import issue_token, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token")
def login(
    request: Request, session: SessionDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    """Exchange a username and password for a bearer token."""
    user = session.scalar(select(User).where(User.username == form.username))
    matches = verify_password(user.password_hash if user else None, form.password)
    if user is None or not user.active or not matches:
        raise AuthenticationError("wrong username or password")
    token, seconds = issue_token(user.id, user.role, request.app.state.secret)
    return Token(access_token=token, expires_in=seconds)


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    """Who the token or API key belongs to."""
    return UserPublic.model_validate(user)
