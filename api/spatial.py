"""PostGIS, where the database has it (migration 0012): the geometry columns kept beside the
GeoJSON text, outside the ORM models (no GeoAlchemy needed), and whether they are there."""

from __future__ import annotations

import weakref

from sqlalchemy import ColumnElement, Engine, func, literal_column, text
from sqlalchemy.orm import Session

# What migration 0012 adds outside the models (and PostGIS's own table).
OUTSIDE_MODELS = frozenset(
    {"geom", "footprint", "ix_sites_geom", "ix_findings_geom", "ix_frames_footprint",
     "spatial_ref_sys"}
)  # fmt: skip
SITE_GEOMETRY: ColumnElement[object] = literal_column("sites.geom")
FRAME_FOOTPRINT: ColumnElement[object] = literal_column("frames.footprint")

_known: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def has_postgis(session: Session) -> bool:
    """True when the database is PostgreSQL with the geometry columns of migration 0012."""
    engine = session.get_bind().engine
    if engine.dialect.name != "postgresql":
        return False
    if engine not in _known:
        _known[engine] = (
            session.execute(
                text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = 'sites' AND column_name = 'geom'"
                )
            ).first()
            is not None
        )
    return _known[engine]


def envelope(
    min_lon: float, min_lat: float, max_lon: float, max_lat: float
) -> ColumnElement[object]:
    """A lon/lat rectangle as a PostGIS geometry."""
    return func.ST_MakeEnvelope(min_lon, min_lat, max_lon, max_lat, 4326)
