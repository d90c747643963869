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
    # set by POST /flights/{id}/complete: the last frame is in, findings may be made
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    # set when the service has made the flight's findings from its frames
    analysed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


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
    # detection in the service: None (not asked), pending, done or rejected (the reason in
    # analysis_note: blur, exposure, far from every site, ...)
    analysis: Mapped[str | None] = mapped_column(String(20), default=None)
    analysis_note: Mapped[str | None] = mapped_column(Text, default=None)


class Observation(Base):
    """One detection of one frame placed on the ground (lon/lat), before matching and
    merging: the flight's findings are made from all of them when the flight completes."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flight_id: Mapped[int] = mapped_column(ForeignKey("flights.id"), index=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id"), index=True)
    finding_class: Mapped[str] = mapped_column(String(30))
    geometry_geojson: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    uncertainty_m: Mapped[float] = mapped_column(Float)
    pixel_box: Mapped[list[int]] = mapped_column(JSON, default=list)


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
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    history: Mapped[str] = mapped_column(Text, default="", server_default="")


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
    completed_at: datetime | None = None
    analysed_at: datetime | None = None


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
    analysis: str | None = None
    analysis_note: str | None = None


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
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = Field(None, description="the process that ran (or runs) it last")
    history: str = Field("", description="a line per attempt: who ran it and how it ended")
