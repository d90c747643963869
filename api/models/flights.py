"""Flights, their frames (content-addressed JPEGs) and background jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UtcDateTime


def _now() -> datetime:
    return datetime.now(UTC)


class Flight(Base):
    __tablename__ = "flights"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    drone: Mapped[str | None] = mapped_column(String(100), default=None)
    operator: Mapped[str | None] = mapped_column(String(100), default=None)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)


class Frame(Base):
    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("flight_id", "sha256", name="uq_frames_flight_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flight_id: Mapped[int] = mapped_column(ForeignKey("flights.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, ready, failed
    error: Mapped[str | None] = mapped_column(Text, default=None)
    lat_deg: Mapped[float | None] = mapped_column(Float, default=None)
    lon_deg: Mapped[float | None] = mapped_column(Float, default=None)
    relative_alt_m: Mapped[float | None] = mapped_column(Float, default=None)
    position_quality: Mapped[str | None] = mapped_column(String(20), default=None)
    footprint_geojson: Mapped[str | None] = mapped_column(Text, default=None)
    captured_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), default=JobState.PENDING.value, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    run_after: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)


class FlightCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    drone: str | None = Field(default=None, max_length=100)
    operator: str | None = Field(default=None, max_length=100)
    plan: dict[str, Any] = Field(default_factory=dict)


class FlightPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    drone: str | None
    operator: str | None
    created_at: datetime


class FramePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    flight_id: int
    sha256: str
    filename: str
    size_bytes: int
    status: str
    error: str | None
    lat_deg: float | None
    lon_deg: float | None
    relative_alt_m: float | None
    position_quality: str | None


class FrameUploaded(BaseModel):
    frame: FramePublic
    job_id: int | None  # None when the same content was uploaded before (idempotent)
    duplicate: bool


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    error: str | None
