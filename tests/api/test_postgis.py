"""PostGIS on PostgreSQL (migration 0012): geometry columns follow their GeoJSON through
triggers, the map's view and "which sites did this flight see" run on GiST indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely import wkb
from shapely.geometry import box, mapping
from sqlalchemy import text

from api.db import make_engine, session_factory
from api.migrate import upgrade
from api.models.flights import Frame
from api.services.coverage import seen_by, sites_seen
from api.spatial import has_postgis
from tests.api.conftest import World
from tests.api.test_sites_api import LAT, LON, D, registry_file, square, upload

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _geometries(world: World, table: str, column: str, key: str) -> dict[str, object]:
    engine = make_engine(world.settings.database.url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT {key}, ST_AsBinary({column}) FROM {table} ORDER BY {key}")
        ).all()
    engine.dispose()
    return {str(row[0]): wkb.loads(bytes(row[1])) if row[1] is not None else None for row in rows}


def same(a: object, b: object) -> bool:
    """The same shape, whatever the vertex order and the last bits of the coordinates."""
    return bool(a.symmetric_difference(b).area < 1e-14)  # type: ignore[attr-defined]


def test_site_geometry_follows_the_registry_through_the_trigger(
    world: World, tmp_path: Path
) -> None:
    rows = [("S1", "东关工地", "县住房和城乡建设局", square(0)),
            ("S2", "西关工地", "县住房和城乡建设局", square(1))]  # fmt: skip
    assert upload(world, registry_file(tmp_path, rows)).status_code == 200  # type: ignore[attr-defined]
    stored = _geometries(world, "sites", "geom", "site_id")
    assert same(stored["S1"], square(0)) and same(stored["S2"], square(1))
    moved = [rows[0], ("S2", "西关工地", "县住房和城乡建设局", square(7))]
    assert upload(world, registry_file(tmp_path, moved)).status_code == 200  # type: ignore[attr-defined]
    assert same(_geometries(world, "sites", "geom", "site_id")["S2"], square(7))
    headers = world.login("analyst")
    (x0, y0, x1, y1) = square(7).bounds  # type: ignore[attr-defined]
    view = world.client.get("/sites", params={"bbox": f"{x0},{y0},{x1},{y1}"}, headers=headers)
    assert [s["site_id"] for s in view.json()] == ["S2"]
    with session_factory(make_engine(world.settings.database.url))() as session:
        assert has_postgis(session)  # the query above went through the geometry's index


def cell(i: int, j: int) -> object:
    """A D x D square i cells east and j north of (LON, LAT)."""
    return box(LON + i * D, LAT + j * D, LON + (i + 1) * D, LAT + (j + 1) * D)


def test_the_sites_a_flight_saw_are_those_its_footprints_touch_not_their_bounding_box(
    world: World, tmp_path: Path
) -> None:
    """Two footprints at opposite corners: a site between them, inside the box of both but
    touched by neither, is not among the sites seen."""
    bureau = "县住房和城乡建设局"
    middle = cell(3, 3)
    rows = [("S1", "角上", bureau, cell(0, 0)), ("S2", "中间", bureau, middle),
            ("S3", "远处", bureau, cell(40, 0))]  # fmt: skip
    assert upload(world, registry_file(tmp_path, rows)).status_code == 200  # type: ignore[attr-defined]
    corners = [box(LON - D, LAT - D, LON + 2 * D, LAT + 2 * D),
               box(LON + 6 * D, LAT + 6 * D, LON + 8 * D, LAT + 8 * D)]  # fmt: skip
    sessions = session_factory(make_engine(world.settings.database.url))
    made = world.client.post("/flights", json={"name": "f"}, headers=world.login("analyst"))
    flight_id = int(made.json()["id"])
    with sessions() as session:
        for number, footprint in enumerate(corners):
            session.add(
                Frame(
                    flight_id=flight_id,
                    sha256=f"{number:064d}",
                    filename=f"F{number}.JPG",
                    size_bytes=1,
                    status="ready",
                    footprint_geojson=json.dumps(mapping(footprint)),
                )
            )
        session.commit()
        seen = seen_by(session, flight_id)
        assert seen is not None and seen.envelope.contains(middle)  # type: ignore[call-overload]
        assert [site.site_id for site in sites_seen(session, flight_id, seen)] == ["S1"]
    footprints = _geometries(world, "frames", "footprint", "filename")
    assert same(footprints["F0.JPG"], corners[0])


def test_a_second_migration_run_changes_nothing(world: World) -> None:
    upgrade(world.settings.database.url)  # the columns, functions and triggers exist: no-op
    assert _geometries(world, "sites", "geom", "site_id") == {}
