"""What a flight's frames saw of the ground, and how much of a site that is: shared by the
verification of rectified notices and the patrol report."""

from __future__ import annotations

import json

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from api.models.flights import Frame
from api.models.sites import Site
from api.spatial import FRAME_FOOTPRINT, SITE_GEOMETRY, has_postgis
from geo.crs import WGS84, transform_geometry, utm_crs_for


def frame_footprints(session: Session, flight_id: int) -> list[BaseGeometry]:
    """The ground footprints (lon/lat) of the flight's frames whose metadata was read."""
    return [
        shape(json.loads(footprint))
        for footprint in session.scalars(
            select(Frame.footprint_geojson).where(
                Frame.flight_id == flight_id, Frame.status == "ready"
            )
        )
        if footprint
    ]


def seen_by(session: Session, flight_id: int) -> BaseGeometry | None:
    """The union of the flight's frame footprints (lon/lat); None without any."""
    footprints = frame_footprints(session, flight_id)
    return shapely.union_all(footprints) if footprints else None


def site_coverage_share(site: Site, seen: BaseGeometry | None) -> float:
    """Share of the site inside ``seen`` (lon/lat), measured in the site's UTM zone."""
    if seen is None:
        return 0.0
    outline = shape(json.loads(site.geometry_geojson))
    if not outline.intersects(seen):
        return 0.0
    centre = outline.centroid
    utm = utm_crs_for(centre.x, centre.y)
    outline_utm = transform_geometry(outline, WGS84, utm)
    seen_utm = transform_geometry(seen, WGS84, utm)
    return float(outline_utm.intersection(seen_utm).area / outline_utm.area)


def in_view(session: Session, flight_id: int, seen: BaseGeometry) -> ColumnElement[bool]:
    """A condition on `Site`: the site may have been seen by the flight's frames (``seen``,
    their union in lon/lat). With PostGIS, its outline meets a frame's footprint (GiST
    indexes, in the database); elsewhere its bounding box meets the box of everything seen.
    The share seen is measured after, from the geometries."""
    if has_postgis(session):
        return (
            exists()
            .where(
                Frame.flight_id == flight_id,
                Frame.status == "ready",
                func.ST_Intersects(FRAME_FOOTPRINT, SITE_GEOMETRY),
            )
            .correlate(Site)
        )
    min_lon, min_lat, max_lon, max_lat = seen.bounds
    return and_(
        Site.max_lon >= min_lon,
        Site.min_lon <= max_lon,
        Site.max_lat >= min_lat,
        Site.min_lat <= max_lat,
    )


def sites_seen(session: Session, flight_id: int, seen: BaseGeometry | None) -> list[Site]:
    """The sites the flight's frames may have seen (`in_view`), by site id."""
    if seen is None:
        return []
    query = select(Site).where(in_view(session, flight_id, seen)).order_by(Site.site_id)
    return list(session.scalars(query))
