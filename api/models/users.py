"""Users (admin, analyst, inspector, bureau) and API keys for machine clients."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from zxcvbn import zxcvbn

from api.db import Base, UtcDateTime

MIN_PASSWORD_SCORE = 3  # zxcvbn's 0-4: 3 is "safely unguessable" for an online attack


def password_problem(password: str, username: str) -> str:
    """Why ``password`` is too easy to guess (zxcvbn: common passwords, repeats, sequences,
    dictionary words, the user name itself), or "" when it will do."""
    if not password.strip():
        return "the password is blank"
    if username and password.strip().lower() == username.lower():
        return "the password must not be the user name"
    verdict = zxcvbn(password[:100], user_inputs=[username])
    if verdict["score"] >= MIN_PASSWORD_SCORE:
        return ""
    feedback = verdict["feedback"]
    hints = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions", [])]))
    return f"the password is too easy to guess{': ' + hints if hints else ''}"


class Role(StrEnum):
    ADMIN = "admin"
    ANALYST = "analyst"
    INSPECTOR = "inspector"
    BUREAU = "bureau"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    bureau_id: Mapped[int | None] = mapped_column(ForeignKey("bureaus.id"), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=lambda: datetime.now(UTC))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    prefix: Mapped[str] = mapped_column(String(12), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=lambda: datetime.now(UTC))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class LoginThrottle(Base):
    """Failed logins counted per user name and per client address (``user:NAME``,
    ``addr:IP``) in a window, and until when further tries are refused. In the database, so
    every API process sees the same counts."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=2, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=10, max_length=200)
    role: Role
    bureau_id: int | None = Field(default=None, ge=1, le=2**63 - 1)

    @model_validator(mode="after")
    def _password_is_hard_to_guess(self) -> UserCreate:
        problem = password_problem(self.password, self.username)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _bureau_users_belong_to_a_bureau(self) -> UserCreate:
        if self.role is Role.BUREAU and self.bureau_id is None:
            raise ValueError("a bureau user needs bureau_id")
        if self.role is not Role.BUREAU and self.bureau_id is not None:
            raise ValueError("only bureau users belong to a bureau")
        return self


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    bureau_id: int | None
    active: bool


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool
    reason: str | None = Field(default=None, max_length=500)


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    label: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: int
    label: str
    key: str  # shown once; only its hash is stored


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
