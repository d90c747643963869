"""PostGIS geometry on PostgreSQL: sites, findings and frame footprints get a geometry column
(lon/lat, SRID 4326) kept from their GeoJSON text by triggers, each with a GiST index, so the
map's view and "which sites did this flight see" run in the database, and GIS tools (QGIS)
read the tables as layers. Where the server has no PostGIS (the extension cannot be found or
created), nothing changes and the queries stay on bounding boxes; `dustpatrol doctor` says so.
SQLite: nothing to do (its R*Tree of migration 0010 serves the map).

Revision ID: 0012
Revises: 0011
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

# table -> (geometry column, GeoJSON text column)
COLUMNS = {"sites": ("geom", "geometry_geojson"), "findings": ("geom", "geometry_geojson"),
           "frames": ("footprint", "footprint_geojson")}  # fmt: skip


def _postgis(bind: sa.engine.Connection) -> bool:
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")).first():
        return True
    if not bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
    ).first():
        log.warning(
            "PostGIS is not installed on the database server: spatial queries stay on "
            "bounding boxes (to add it later: install postgis, then migrate down to 0011 and "
            "up again)"
        )
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    except sa.exc.DBAPIError as exc:
        log.warning(
            "PostGIS could not be enabled (%s): ask the database administrator for "
            "CREATE EXTENSION postgis; spatial queries stay on bounding boxes",
            exc.orig,
        )
        return False
    return True


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _postgis(bind):
        return
    for table, (geometry, text) in COLUMNS.items():
        op.execute(f"ALTER TABLE {table} ADD COLUMN {geometry} geometry(Geometry, 4326)")
        # Text that is no geometry (old rows; the service validates what it writes) leaves
        # the column empty with a warning in the server's log instead of refusing the row.
        op.execute(
            f"CREATE FUNCTION dustpatrol_{table}_{geometry}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN NEW.{geometry} := CASE WHEN NEW.{text} IS NULL "
            f"OR NEW.{text} = 'null' THEN NULL ELSE "
            f"ST_SetSRID(ST_GeomFromGeoJSON(NEW.{text}), 4326) END; RETURN NEW; "
            f"EXCEPTION WHEN OTHERS THEN NEW.{geometry} := NULL; "
            f"RAISE WARNING '{table} %: no geometry in its GeoJSON (%)', NEW.id, SQLERRM; "
            f"RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_{geometry} BEFORE INSERT OR UPDATE OF {text} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION dustpatrol_{table}_{geometry}()"
        )
        op.execute(f"UPDATE {table} SET {text} = {text} WHERE {text} IS NOT NULL")
        op.execute(f"CREATE INDEX ix_{table}_{geometry} ON {table} USING gist ({geometry})")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, (geometry, _) in COLUMNS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_{geometry} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS dustpatrol_{table}_{geometry}()")
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {geometry}")
