"""What the analysts' map draws: sites coloured by their notices, findings with their photos,
flight tracks and frame footprints, filtered by date, bureau and class. RFC 7946 GeoJSON."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from api.errors import InvalidInputError
from api.models.bureaus import Bureau
from api.models.flights import Flight, Frame
from api.models.notices import Finding, FindingClass, Notice
from api.models.sites import Site
from api.models.users import Role, User
from api.services.evidence import evidence_url
from api.services.sites import bureau_names, in_bbox, visible_sites

# The state a site is drawn in: its most pressing notice, most pressing first.
STATE_ORDER = (
    "escalated",
    "overdue",
    "issued",
    "acknowledged",
    "rectified",
    "verified",
    "closed",
    "rejected",
)
DEFAULT_DAYS = 30
MAX_SITES = 5000  # per response: beyond it, the page asks for its view's bbox


def window(since: date | None, until: date | None) -> tuple[datetime, datetime]:
    """[since 00:00, until 24:00) in UTC; the last DEFAULT_DAYS days by default."""
    end = (
        datetime.combine(until, time(), UTC) + timedelta(days=1)
        if until
        else datetime.now(UTC) + timedelta(minutes=1)
    )
    start = datetime.combine(since, time(), UTC) if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise InvalidInputError("since must be on or before until")
    return start, end


def map_data(
    session: Session,
    user: User,
    *,
    since: date | None = None,
    until: date | None = None,
    bureau: str | None = None,
    finding_class: str | None = None,
    bbox: str | None = None,
    max_sites: int = MAX_SITES,
) -> dict[str, Any]:
    if finding_class and finding_class not in {c.value for c in FindingClass}:
        raise InvalidInputError(
            f"finding_class must be one of {', '.join(c.value for c in FindingClass)}"
        )
    start, end = window(since, until)
    sites_query = visible_sites(user)
    if bureau:
        named = select(Bureau.id).where(Bureau.name == bureau)
        if user.role == Role.BUREAU:  # another bureau's name is as unknown as a made-up one
            named = named.where(Bureau.id == user.bureau_id)
        bureau_id = session.scalar(named)
        if bureau_id is None:
            raise InvalidInputError(f"no bureau named {bureau!r}")
        sites_query = sites_query.where(Site.bureau_id == bureau_id)
    owner = user.bureau_id if user.role == Role.BUREAU else None
    extent = None if bbox else _extent(session, sites_query)
    if bbox:
        sites_query = in_bbox(session, sites_query, bbox)
    sites = list(session.scalars(sites_query.limit(max_sites + 1)))
    truncated = len(sites) > max_sites
    sites = sites[:max_sites]
    site_ids = {s.id: s.site_id for s in sites}
    return {
        "window": [start.isoformat(), end.isoformat()],
        "truncated": truncated,  # more sites than one response carries: ask for a bbox
        "extent": extent,  # of all the sites asked for, for the first view; None with a bbox
        "sites": _sites(session, sites, finding_class, owner),
        "findings": _findings(session, site_ids, start, end, finding_class, owner),
        "flights": _flights(session, user, start, end),
    }


def _extent(session: Session, sites_query: Select[Any]) -> list[float] | None:
    """The bounding box of the sites ``sites_query`` selects."""
    chosen = sites_query.order_by(None).subquery()
    row = session.execute(
        select(
            func.min(chosen.c.min_lon),
            func.min(chosen.c.min_lat),
            func.max(chosen.c.max_lon),
            func.max(chosen.c.max_lat),
        )
    ).one()
    return None if row[0] is None else [float(v) for v in row]


def _sites(
    session: Session, sites: list[Site], finding_class: str | None, owner: int | None
) -> dict[str, Any]:
    """The sites with their notices; for a bureau (``owner``) only the notices it received:
    a site moved to it from another bureau does not bring that bureau's notices along."""
    notices: dict[int, list[Row[int, str, str, str]]] = {}
    # Only what the map shows of a notice (never its texts): a view's sites carry hundreds.
    query = (
        select(Notice.site_id, Notice.number, Notice.finding_class, Notice.state)
        .where(Notice.site_id.in_([s.id for s in sites]))
        .order_by(Notice.id)
    )
    if owner is not None:
        query = query.where(Notice.bureau_id == owner)
    if finding_class:
        query = query.where(Notice.finding_class == finding_class)
    for notice in session.execute(query) if sites else ():
        notices.setdefault(notice.site_id, []).append(notice)
    names = bureau_names(session)
    features = []
    for site in sites:
        own = notices.get(site.id, [])
        states = [n.state for n in own]
        state = next((s for s in STATE_ORDER if s in states), "none")
        features.append(
            {
                "type": "Feature",
                "id": site.site_id,
                "geometry": json.loads(site.geometry_geojson),
                "properties": {
                    "site_id": site.site_id,
                    "name": site.name,
                    "kind": site.kind,
                    "bureau": names.get(site.bureau_id) if site.bureau_id else None,
                    "state": state,
                    "notices": [
                        {"number": n.number, "class": n.finding_class, "state": n.state}
                        for n in own[-10:]
                    ],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _findings(
    session: Session,
    site_ids: dict[int, str],
    start: datetime,
    end: datetime,
    finding_class: str | None,
    owner: int | None,
) -> dict[str, Any]:
    if not site_ids:
        return {"type": "FeatureCollection", "features": []}
    query = (
        select(Finding, Notice.number)
        .outerjoin(Notice, Finding.notice_id == Notice.id)
        .where(
            Finding.site_id.in_(list(site_ids)),
            Finding.created_at >= start,
            Finding.created_at < end,
        )
        .order_by(Finding.id)
    )
    if finding_class:
        query = query.where(Finding.finding_class == finding_class)
    if owner is not None:
        query = query.where(Finding.bureau_id == owner)
    features = [
        {
            "type": "Feature",
            "id": finding.id,
            "geometry": json.loads(finding.geometry_geojson),
            "properties": {
                "id": finding.id,
                "class": finding.finding_class,
                "site_id": site_ids.get(finding.site_id) if finding.site_id else None,
                "flight": finding.flight_id,
                "area_m2": finding.area_m2,
                "confidence": finding.confidence,
                "review": finding.review,
                "notice": number,
                "found_at": finding.created_at.isoformat(),
                "images": [evidence_url(finding.id, i) for i in range(len(finding.evidence))],
            },
        }
        for finding, number in session.execute(query)
    ]
    return {"type": "FeatureCollection", "features": features}


def _flights(session: Session, user: User, start: datetime, end: datetime) -> dict[str, Any]:
    """Each flight's track (frame positions in capture order) and its frames' footprints.
    Flights are the inspectors' and analysts' business: a bureau user gets none."""
    if user.role == Role.BUREAU:
        return {"type": "FeatureCollection", "features": []}
    flights = list(
        session.scalars(
            select(Flight)
            .where(Flight.created_at >= start, Flight.created_at < end)
            .order_by(Flight.id)
        )
    )
    by_flight: dict[int, list[Frame]] = {}
    for frame in session.scalars(
        select(Frame)
        .where(Frame.flight_id.in_([f.id for f in flights]), Frame.status == "ready")
        .order_by(Frame.captured_at, Frame.id)
    ):
        by_flight.setdefault(frame.flight_id, []).append(frame)
    features: list[dict[str, Any]] = []
    for flight in flights:
        frames = by_flight.get(flight.id, [])
        track = [[f.lon_deg, f.lat_deg] for f in frames if f.lon_deg is not None]
        if len(track) >= 2:
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": track},
                    "properties": {
                        "kind": "track",
                        "flight": flight.id,
                        "name": flight.name,
                        "drone": flight.drone,
                        "frames": len(frames),
                    },
                }
            )
        features.extend(
            {
                "type": "Feature",
                "geometry": json.loads(frame.footprint_geojson),
                "properties": {
                    "kind": "footprint",
                    "flight": flight.id,
                    "frame": frame.filename,
                    "overlay": f"/frames/{frame.id}/overlay",
                },
            }
            for frame in frames
            if frame.footprint_geojson
        )
    return {"type": "FeatureCollection", "features": features}
