"""Findings from the pipeline, and rectification notices with their audited lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from typing_extensions import TypedDict

from api.db import Base, UtcDateTime


def _now() -> datetime:
    return datetime.now(UTC)


class FindingClass(StrEnum):
    EXPOSED_SOIL = "exposed_soil"
    ROAD_DUST = "road_dust"
    COVERED_SOIL = "covered_soil"


class FindingReview(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class NoticeState(StrEnum):
    ISSUED = "issued"
    ACKNOWLEDGED = "acknowledged"
    RECTIFIED = "rectified"
    VERIFIED = "verified"
    CLOSED = "closed"
    OVERDUE = "overdue"
    ESCALATED = "escalated"
    REJECTED = "rejected"


OPEN_STATES = frozenset(
    {
        NoticeState.ISSUED,
        NoticeState.ACKNOWLEDGED,
        NoticeState.RECTIFIED,
        NoticeState.OVERDUE,
        NoticeState.ESCALATED,
    }
)


# The partial unique index's condition (migration 0007 names the same states).
OPEN_NOTICE_CONDITION = "state IN ({})".format(
    ", ".join(f"'{state.value}'" for state in NoticeState if state in OPEN_STATES)
)
# What a bureau's inbox lists of a notice besides its id (see `api.services.notices`).
INBOX_COLUMNS = ("number", "site_id", "finding_class", "state", "issued_at", "deadline")
# Notices neither rectified, nor marked overdue, nor seen past their deadline by the
# housekeeping (nor rejected): whether their deadline has passed depends on the clock, so the
# ledger counts them at query time. Housekeeping keeps them few.
UNSETTLED_CONDITION = (
    "rectified_at IS NULL AND went_overdue = false AND deadline_missed = false "
    "AND state <> 'rejected'"
)


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flight_id: Mapped[int] = mapped_column(ForeignKey("flights.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True, default=None)
    # The bureau whose business the finding is: its notice's bureau once it has one, else the
    # site's bureau when it was found. A site moved to another bureau leaves these behind.
    bureau_id: Mapped[int | None] = mapped_column(
        ForeignKey("bureaus.id"), index=True, default=None
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # makes re-posting idempotent
    finding_class: Mapped[str] = mapped_column(String(30))
    geometry_geojson: Mapped[str] = mapped_column(Text)
    area_m2: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    uncertainty_m: Mapped[float] = mapped_column(Float)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    review: Mapped[str] = mapped_column(String(20), default=FindingReview.PENDING.value)
    notice_id: Mapped[int | None] = mapped_column(
        ForeignKey("notices.id"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)
    # client: posted to /flights/{id}/findings; service: the service's own analysis
    origin: Mapped[str] = mapped_column(String(10), default="client", server_default="client")


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (
        Index("ix_notices_bureau_state_id", "bureau_id", "state", "id"),
        Index("ix_notices_state_deadline", "state", "deadline"),
        Index("ix_notices_issued_at", "issued_at"),
        # The open notices in id order, per bureau and for staff: a page of an inbox reads
        # only open rows, however many closed ones lie between them. On PostgreSQL the
        # bureau's index carries the columns a list shows, so a page is an index-only scan
        # (without them the planner preferred the staff index and filtered ten rows for each
        # one kept: 0.55 ms a page against 0.2 ms).
        Index(
            "ix_notices_open_bureau_id",
            "bureau_id",
            "id",
            sqlite_where=text(OPEN_NOTICE_CONDITION),
            postgresql_where=text(OPEN_NOTICE_CONDITION),
            postgresql_include=list(INBOX_COLUMNS),
        ),
        Index(
            "ix_notices_open_id",
            "id",
            sqlite_where=text(OPEN_NOTICE_CONDITION),
            postgresql_where=text(OPEN_NOTICE_CONDITION),
        ),
        # Notices whose deadline may pass unrectified and unmarked: the ledger's live part.
        Index(
            "ix_notices_unsettled_deadline",
            "deadline",
            sqlite_where=text(UNSETTLED_CONDITION),
            postgresql_where=text(UNSETTLED_CONDITION),
        ),
        # One open notice per site and class, whatever races: the database refuses a second.
        Index(
            "uq_notices_one_open_per_site_class",
            "site_id",
            "finding_class",
            unique=True,
            sqlite_where=text(OPEN_NOTICE_CONDITION),
            postgresql_where=text(OPEN_NOTICE_CONDITION),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(30), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    bureau_id: Mapped[int | None] = mapped_column(
        ForeignKey("bureaus.id"), index=True, default=None
    )
    finding_class: Mapped[str] = mapped_column(String(30))
    state: Mapped[str] = mapped_column(String(20), index=True)
    text_zh: Mapped[str] = mapped_column(Text)
    text_en: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime())
    # Kept from the notice's events as they are written (for the ledger): when it was first
    # reported rectified, and whether it ever went overdue.
    rectified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    went_overdue: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The housekeeping saw the deadline pass (a notice in any state, e.g. closed unrectified).
    deadline_missed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class _LedgerCounts:
    """The ledger's counts of a group of notices (see `api.services.ledger.contribution`)."""

    issued: Mapped[int] = mapped_column(Integer, default=0)
    open: Mapped[int] = mapped_column(Integer, default=0)
    rectified: Mapped[int] = mapped_column(Integer, default=0)
    on_time: Mapped[int] = mapped_column(Integer, default=0)
    overdue: Mapped[int] = mapped_column(Integer, default=0)
    settled: Mapped[int] = mapped_column(Integer, default=0)  # rectified, overdue or missed
    hours_to_rectify: Mapped[float] = mapped_column(Float, default=0.0)


class LedgerTotal(_LedgerCounts, Base):
    """The ledger's counts per (bureau, site), kept up to date by every notice change
    (`api.services.ledger.account`), so a ledger reads one small row per site instead of
    every notice and event. ``bureau_key`` is the notice's bureau id, 0 for none."""

    __tablename__ = "ledger_totals"
    __table_args__ = (UniqueConstraint("site_id", "bureau_key", name="uq_ledger_site_bureau"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    bureau_key: Mapped[int] = mapped_column(Integer, index=True)


class BureauLedgerTotal(_LedgerCounts, Base):
    """The same counts per bureau (the ledger per bureau reads a row per bureau)."""

    __tablename__ = "ledger_bureau_totals"

    bureau_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class NoticeCounter(Base):
    """The last number issued in a series (``GX-2026``): incremented in the issuing
    transaction, so concurrent issues never share a number."""

    __tablename__ = "notice_counters"

    series: Mapped[str] = mapped_column(String(30), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class NoticePhoto(Base):
    """A photo uploaded to a notice (the bureau's proof of rectification, usually), stored
    content-addressed; transitions name them as attachments by SHA-256."""

    __tablename__ = "notice_photos"
    __table_args__ = (UniqueConstraint("notice_id", "sha256", name="uq_notice_photos_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)


class NoticePhotoPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sha256: str
    filename: str
    size_bytes: int
    at: datetime
    url: str


class NoticeEvent(Base):
    __tablename__ = "notice_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(20), default=None)
    to_state: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    attachments: Mapped[list[str]] = mapped_column(JSON, default=list)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=_now)


class FindingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    flight_id: int
    site: str | None
    finding_class: str
    area_m2: float
    confidence: float
    uncertainty_m: float
    review: str
    notice: str | None
    evidence: list[dict[str, Any]]
    origin: str = Field(
        "client", description="client: posted by a client; service: the service's analysis"
    )


class FindingsIngested(BaseModel):
    created: int
    unchanged: int
    unknown_sites: list[str]
    notices_issued: list[str]


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class TransitionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: NoticeState
    note: str | None = Field(default=None, max_length=2000)
    attachments: list[str] = Field(default_factory=list, max_length=20)


class NoticeEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    actor_id: int | None
    note: str | None
    attachments: list[str]
    at: datetime


class NoticeSummary(TypedDict):
    """A notice in a list: what a bureau's inbox shows (the full notice at /notices/{number}).
    A typed dict, not a model: a page of them is written straight from database rows."""

    number: str
    site: str
    site_name: str | None
    bureau: str | None
    finding_class: str
    state: str
    issued_at: datetime
    deadline: datetime


NOTICE_SUMMARIES = TypeAdapter(list[NoticeSummary])


class NoticePublic(BaseModel):
    number: str
    site: str
    bureau: str | None
    finding_class: str
    state: str
    text_zh: str
    text_en: str
    issued_at: datetime
    deadline: datetime
    findings: list[int]
    events: list[NoticeEventPublic]
