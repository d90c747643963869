"""Registered sites: polygons in EPSG:4326 (GeoJSON), with a bounding box for filtering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UtcDateTime


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str | None] = mapped_column(String(300), default=None)
    kind: Mapped[str | None] = mapped_column(String(50), default=None, index=True)
    address: Mapped[str | None] = mapped_column(String(500), default=None)
    permit_number: Mapped[str | None] = mapped_column(String(100), default=None)
    contact: Mapped[str | None] = mapped_column(String(200), default=None)
    bureau_id: Mapped[int | None] = mapped_column(
        ForeignKey("bureaus.id"), default=None, index=True
    )
    geometry_geojson: Mapped[str] = mapped_column(Text)
    min_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)
    area_m2: Mapped[float] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=lambda: datetime.now(UTC))


class SitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    site_id: str
    name: str | None
    kind: str | None
    address: str | None
    permit_number: str | None
    contact: str | None
    bureau: str | None
    area_m2: float
    bbox: tuple[float, float, float, float]


class SiteIssuePublic(BaseModel):
    feature: str
    problem: str


class OverlapPublic(BaseModel):
    site_a: str
    site_b: str
    area_m2: float


class ReassignmentPublic(BaseModel):
    """A site the import moved to another bureau (admins only; audited)."""

    site: str
    from_bureau: str | None
    to_bureau: str | None


class ImportReport(BaseModel):
    source: str
    created: int
    updated: int
    crs_note: str
    notes: list[str]
    repaired: list[SiteIssuePublic]
    rejected: list[SiteIssuePublic]
    overlaps: list[OverlapPublic]
    reassigned: list[ReassignmentPublic] = []
