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
from api.services import throttle

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token")
def login(
    request: Request, session: SessionDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Token:
    """Exchange a username and password for a bearer token. Repeated failures for one user
    name or from one address are refused for a while (429 with ``Retry-After``)."""
    address = request.client.host if request.client else None
    throttle.check(session, form.username, address)
    user = session.scalar(select(User).where(User.username == form.username))
    matches = verify_password(user.password_hash if user else None, form.password)
    if user is None or not user.active or not matches:
        server = request.app.state.settings.server
        rules = throttle.ThrottleRules(
            per_user=server.login_failures_per_user,
            per_address=server.login_failures_per_address,
            lock_s=server.login_lock_s,
        )
        throttle.failed(session, rules, form.username, address)
        raise AuthenticationError("wrong username or password")
    throttle.succeeded(session, form.username)
    token, seconds = issue_token(user.id, user.role, request.app.state.secret)
    return Token(access_token=token, expires_in=seconds)


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    """Who the token or API key belongs to."""
    return UserPublic.model_validate(user)
