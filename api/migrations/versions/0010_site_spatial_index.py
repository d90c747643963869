"""A spatial index of the sites' bounding boxes, so the map's view and a bbox filter read
the sites in view instead of every site: an R*Tree (kept by triggers) on SQLite, a GiST
index on the box on PostgreSQL (no extension needed).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BOX = "box(point(min_lon, min_lat), point(max_lon, max_lat))"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_sites_bbox ON sites USING gist ({BOX})")
        return
    op.execute(
        "CREATE VIRTUAL TABLE sites_rtree USING rtree(id, min_lon, max_lon, min_lat, max_lat)"
    )
    op.execute(
        "INSERT INTO sites_rtree (id, min_lon, max_lon, min_lat, max_lat) "
        "SELECT id, min_lon, max_lon, min_lat, max_lat FROM sites"
    )
    op.execute(
        "CREATE TRIGGER sites_rtree_insert AFTER INSERT ON sites BEGIN "
        "INSERT INTO sites_rtree (id, min_lon, max_lon, min_lat, max_lat) "
        "VALUES (new.id, new.min_lon, new.max_lon, new.min_lat, new.max_lat); END"
    )
    op.execute(
        "CREATE TRIGGER sites_rtree_update AFTER UPDATE OF min_lon, max_lon, min_lat, max_lat "
        "ON sites BEGIN UPDATE sites_rtree SET min_lon = new.min_lon, max_lon = new.max_lon, "
        "min_lat = new.min_lat, max_lat = new.max_lat WHERE id = new.id; END"
    )
    op.execute(
        "CREATE TRIGGER sites_rtree_delete AFTER DELETE ON sites BEGIN "
        "DELETE FROM sites_rtree WHERE id = old.id; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_sites_bbox")
        return
    for trigger in ("sites_rtree_insert", "sites_rtree_update", "sites_rtree_delete"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE sites_rtree")
