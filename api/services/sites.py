"""Importing site registries and querying sites (with bureau isolation)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import mapping
from sqlalchemy import Column, Float, Integer, MetaData, Select, Table, func, select
from sqlalchemy.orm import Session

from api.errors import InvalidInputError, NotFoundError
from api.models.bureaus import Bureau
from api.models.sites import (
    ImportReport,
    OverlapPublic,
    ReassignmentPublic,
    Site,
    SiteIssuePublic,
    SitePublic,
)
from api.models.users import Role, User
from api.services.audit import audit
from api.spatial import SITE_GEOMETRY, envelope, has_postgis
from geo.errors import GeoError
from geo.sites import load_sites

CANONICAL = ("name", "kind", "address", "permit_number", "contact")


def import_registry(
    session: Session,
    data: bytes,
    filename: str,
    *,
    crs: str | None = None,
    encoding: str | None = None,
    id_field: str | None = None,
    actor: User | None = None,
) -> ImportReport:
    """Load a registry file with `geo.sites` and upsert its sites by site id.

    Re-importing the same file changes nothing; a changed feature updates its site. Rejected
    features are reported and leave the sites already stored untouched.

    Bureaus are an admin's business: only an admin (``actor`` of role admin, or None for the
    server's own command line) creates the bureaus a file names and moves a site to another
    bureau, each recorded in the audit log. For anyone else such a row is rejected with the
    reason and the rest of the file is imported. A moved site's notices stay with the bureau
    that received them.
    """
    may_manage = actor is None or actor.role == Role.ADMIN
    suffix = Path(filename).suffix.lower()
    if not suffix:
        raise InvalidInputError(
            f"{filename!r} has no file extension; name the file after its format"
        )
    if not re.fullmatch(r"\.[a-z0-9]{1,10}", suffix):
        raise InvalidInputError(
            f"{filename!r}: the file extension {suffix!r} is not a registry format's"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            registry = load_sites(path, crs=crs, encoding=encoding, id_field=id_field)
        except GeoError as exc:  # name the uploaded file, never this server's temporary path
            exc.args = (str(exc).replace(str(path), filename),)
            raise
    sites = registry.sites
    projected = sites.to_crs(sites.estimate_utm_crs()) if len(sites) else sites
    bureaus = {b.name: b for b in session.scalars(select(Bureau))}
    existing = {
        s.site_id: s
        for s in session.scalars(select(Site).where(Site.site_id.in_(list(sites["site_id"]))))
    }
    created = updated = 0
    refused: list[SiteIssuePublic] = []
    moved: list[ReassignmentPublic] = []
    names = {b.id: b.name for b in bureaus.values()}
    for (_, row), area in zip(sites.iterrows(), projected.area if len(sites) else [], strict=True):
        bureau_name = row.get("responsible_bureau")
        site = existing.get(row["site_id"])
        bureau = None
        if bureau_name:
            bureau = bureaus.get(bureau_name)
            if bureau is None and not may_manage:
                refused.append(
                    SiteIssuePublic(
                        feature=str(row["site_id"]),
                        problem=f"bureau {bureau_name!r} is not registered: an admin adds it "
                        "(POST /bureaus) or imports this file",
                    )
                )
                continue
            if bureau is None:
                bureau = Bureau(name=bureau_name)
                session.add(bureau)
                session.flush()
                bureaus[bureau_name] = bureau
                names[bureau.id] = bureau.name
                audit(session, actor, "bureau.created", bureau_name, source=filename)
        new_bureau = bureau.id if bureau else None
        if site is not None and site.bureau_id != new_bureau:
            old_name = names.get(site.bureau_id) if site.bureau_id else None
            if not may_manage:
                refused.append(
                    SiteIssuePublic(
                        feature=str(row["site_id"]),
                        problem=f"the file moves the site from {old_name or 'no bureau'} to "
                        f"{bureau_name or 'no bureau'}: only an admin moves sites between "
                        "bureaus",
                    )
                )
                continue
            moved.append(
                ReassignmentPublic(site=site.site_id, from_bureau=old_name, to_bureau=bureau_name)
            )
            audit(
                session,
                actor,
                "site.reassigned",
                site.site_id,
                from_bureau=old_name,
                to_bureau=bureau_name,
                source=filename,
            )
        min_lon, min_lat, max_lon, max_lat = row.geometry.bounds
        values: dict[str, Any] = {
            **{name: row.get(name) for name in CANONICAL},
            "bureau_id": bureau.id if bureau else None,
            "geometry_geojson": json.dumps(mapping(shapely.set_precision(row.geometry, 1e-8))),
            "min_lon": min_lon,
            "min_lat": min_lat,
            "max_lon": max_lon,
            "max_lat": max_lat,
            "area_m2": round(float(area), 3),
            "attributes": row.get("attributes") or {},
        }
        if site is None:
            session.add(Site(site_id=row["site_id"], **values))
            created += 1
        elif any(getattr(site, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(site, key, value)
            updated += 1
    session.commit()
    report = registry.report
    return ImportReport(
        source=filename,
        created=created,
        updated=updated,
        crs_note=report.crs_note,
        notes=report.notes,
        repaired=[SiteIssuePublic(feature=i.feature, problem=i.problem) for i in report.repaired],
        rejected=[SiteIssuePublic(feature=i.feature, problem=i.problem) for i in report.rejected]
        + refused,
        reassigned=moved,
        overlaps=[
            OverlapPublic(site_a=o.site_a, site_b=o.site_b, area_m2=round(o.area_m2, 2))
            for o in report.overlaps
        ],
    )


def visible_sites(user: User) -> Select[Site]:
    """Sites ``user`` may see: a bureau user only its own bureau's."""
    query = select(Site).order_by(Site.site_id)
    if user.role == Role.BUREAU:
        query = query.where(Site.bureau_id == user.bureau_id)
    return query


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        min_lon, min_lat, max_lon, max_lat = (float(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError("bbox must be min_lon,min_lat,max_lon,max_lat in degrees") from None
    if not (min_lon <= max_lon and min_lat <= max_lat):
        raise InvalidInputError("bbox minimum must not exceed its maximum")
    return min_lon, min_lat, max_lon, max_lat


def find_sites(
    session: Session,
    user: User,
    *,
    kind: str | None = None,
    bureau: str | None = None,
    bbox: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Site]:
    query = visible_sites(user)
    if kind:
        query = query.where(Site.kind == kind)
    if bureau:
        query = query.join(Bureau, Site.bureau_id == Bureau.id).where(Bureau.name == bureau)
    if bbox:
        query = in_bbox(session, query, bbox)
    return list(session.scalars(query.limit(limit).offset(offset)))


# The spatial index of the sites' boxes on SQLite (migration 0010 makes and keeps it): an
# R*Tree, outside the models' metadata (it is a virtual table, not a table to create).
SITES_RTREE = Table(
    "sites_rtree",
    MetaData(),
    *(Column(name, Float) for name in ("min_lon", "max_lon", "min_lat", "max_lat")),
    Column("id", Integer, primary_key=True),
)


def in_bbox(session: Session, query: Select[Any], bbox: str) -> Select[Any]:
    """``query`` narrowed to the sites whose bounding box meets ``bbox`` (lon/lat text),
    through the spatial index (SQLite's R*Tree, PostGIS's GiST index of the geometry, else
    PostgreSQL's GiST index on the box); the exact comparison follows, as the R*Tree keeps
    its boxes in single precision."""
    min_lon, min_lat, max_lon, max_lat = parse_bbox(bbox)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        query = query.where(
            Site.id.in_(
                select(SITES_RTREE.c.id).where(
                    SITES_RTREE.c.max_lon >= min_lon,
                    SITES_RTREE.c.min_lon <= max_lon,
                    SITES_RTREE.c.max_lat >= min_lat,
                    SITES_RTREE.c.min_lat <= max_lat,
                )
            )
        )
    elif has_postgis(session):  # the GiST index of the sites' geometry
        query = query.where(SITE_GEOMETRY.op("&&")(envelope(min_lon, min_lat, max_lon, max_lat)))
    elif dialect == "postgresql":
        view = func.box(func.point(min_lon, min_lat), func.point(max_lon, max_lat))
        site_box = func.box(
            func.point(Site.min_lon, Site.min_lat), func.point(Site.max_lon, Site.max_lat)
        )
        query = query.where(site_box.op("&&")(view))
    return query.where(
        Site.max_lon >= min_lon,
        Site.min_lon <= max_lon,
        Site.max_lat >= min_lat,
        Site.min_lat <= max_lat,
    )


def get_site(session: Session, user: User, site_id: str) -> Site:
    site = session.scalar(visible_sites(user).where(Site.site_id == site_id))
    if site is None:  # another bureau's site is as absent as a missing one
        raise NotFoundError(f"no site {site_id!r}")
    return site


def bureau_names(session: Session) -> dict[int, str]:
    """Every bureau's name by id (bureaus are few): one query instead of one per site."""
    return {b.id: b.name for b in session.scalars(select(Bureau))}


def site_public(session: Session, site: Site, names: dict[int, str] | None = None) -> SitePublic:
    names = bureau_names(session) if names is None else names
    return SitePublic(
        site_id=site.site_id,
        name=site.name,
        kind=site.kind,
        address=site.address,
        permit_number=site.permit_number,
        contact=site.contact,
        bureau=names.get(site.bureau_id) if site.bureau_id else None,
        area_m2=site.area_m2,
        bbox=(site.min_lon, site.min_lat, site.max_lon, site.max_lat),
    )


def sites_feature_collection(session: Session, sites: list[Site]) -> dict[str, Any]:
    """RFC 7946 FeatureCollection (EPSG:4326 longitude/latitude)."""
    features = []
    names = bureau_names(session)
    for site in sites:
        properties = site_public(session, site, names).model_dump(exclude={"bbox"})
        features.append(
            {
                "type": "Feature",
                "id": site.site_id,
                "bbox": [site.min_lon, site.min_lat, site.max_lon, site.max_lat],
                "geometry": json.loads(site.geometry_geojson),
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}
