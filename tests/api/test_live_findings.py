"""Findings and notices during the flight: each analysed frame updates the flight's findings
so far; a patch seen by a later frame grows in place (same finding, same notice), and the
final analysis at completion adds no second finding of anything already found."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import shape
from sqlalchemy import select

from api.db import make_engine, session_factory
from api.models.notices import Finding
from api.services.notices import sync_flight
from dustpatrol.settings import Settings
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District, generate_district
from tests.api.conftest import World
from tests.api.test_flights_api import new_flight, upload
from tests.api.test_notices_api import findings_for
from tests.api.test_sites_api import imported as imported
from tests.api.test_sites_api import upload as upload_sites


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": database_url},
            "paths": {"data_dir": str(tmp_path / "var")},
            "notices": {"require_confirmation": False},
        }
    )


@pytest.fixture(scope="module")
def district() -> District:
    return generate_district(3, n_sites=10, extent_m=2000.0)


def _findings(world: World, flight: int) -> list[dict[str, Any]]:
    answer = world.client.get("/findings", params={"flight": flight}, headers=world.login("admin"))
    return list(answer.json())


def _wait(condition: Any, what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s:.0f} s")


def test_findings_and_notices_come_during_the_flight_and_grow_in_place(
    world: World, district: District, tmp_path: Path
) -> None:
    write_district(district, tmp_path / "world")
    assert upload_sites(world, tmp_path / "world" / "sites.geojson", who="admin").status_code == 200  # type: ignore[attr-defined]
    # A site with graded soil the shipped model finds from either frame (several hundred m²,
    # confidence over the rules' minimum): a violation, so a notice while the flight goes on.
    site = next(s for s in district.sites if s.site_id == "S0002")
    centre = site.geometry.centroid
    flight = new_flight(world)
    shots = [
        shoot(
            district,
            pose_at(district, centre.x + dx, centre.y, 100.0),
            camera_preset("m3e", 0.25),
            PoseNoise(GnssMode.RTK_FIXED),
            seed=number,
        )
        for number, dx in enumerate((-25.0, 25.0))
    ]
    assert upload(world, flight, shots[0].jpeg, "DJI_0000.JPG").status_code == 201
    early = _wait(lambda: _findings(world, flight), "findings from the first frame")
    assert all(f["origin"] == "service" for f in early)
    notices = world.client.get("/notices", headers=world.login("admin")).json()
    assert notices, f"no notice while the flight is still uploading: {early}"
    state = world.client.get(f"/flights/{flight}", headers=world.login("admin")).json()
    assert state["completed_at"] is None

    assert upload(world, flight, shots[1].jpeg, "DJI_0001.JPG").status_code == 201
    _wait(
        lambda: any(
            e["frame_id"] == "DJI_0001.JPG" for f in _findings(world, flight) for e in f["evidence"]
        ),
        "the second frame's evidence",
    )
    done = world.client.post(f"/flights/{flight}/complete", headers=world.login("analyst"))
    assert done.status_code == 202, done.text
    _wait(
        lambda: world.client.get(f"/flights/{flight}", headers=world.login("admin")).json()[
            "analysed_at"
        ],
        "the final analysis",
    )
    final = _findings(world, flight)
    early_ids = {f["id"] for f in early}
    final_ids = {f["id"] for f in final}
    assert early_ids & final_ids, "every early finding was replaced instead of updated"
    with session_factory(make_engine(world.settings.database.url))() as session:
        rows = session.scalars(select(Finding).where(Finding.flight_id == flight)).all()
        outlines = [
            (row.site_id, row.finding_class, shape(json.loads(row.geometry_geojson)))
            for row in rows
        ]
    for i, (site_a, class_a, a) in enumerate(outlines):  # no patch found twice
        for site_b, class_b, b in outlines[i + 1 :]:
            if (site_a, class_a) == (site_b, class_b):
                assert a.intersection(b).area < 1e-12, (site_a, class_a)
    after = world.client.get("/notices", headers=world.login("admin")).json()
    keys = [(n["site"], n["finding_class"]) for n in after]
    assert len(keys) == len(set(keys)) and {n["number"] for n in notices} <= {
        n["number"] for n in after
    }


def test_a_finding_with_a_notice_outlives_a_later_run_that_no_longer_has_it(
    imported: World,
) -> None:
    """Frames that come later may outvote a patch (the vote of `geo.vote`): a finding the
    rules already issued a notice for stays as the notice's evidence; one without goes."""
    flight = new_flight(imported)
    soil = findings_for(imported, "S1", "exposed_soil", 10.0)
    net = findings_for(imported, "S1", "covered_soil", 10.0, shift=20.0)
    both = {"type": "FeatureCollection", "features": soil["features"] + net["features"]}
    sessions = session_factory(make_engine(imported.settings.database.url))
    with sessions() as session:
        first = sync_flight(session, imported.settings, flight, both, final=False)
    assert first.created == 2 and len(first.notices_issued) == 1
    with sessions() as session:
        sync_flight(session, imported.settings, flight, _empty(), final=False)
    with sessions() as session:
        rows = session.scalars(select(Finding).where(Finding.flight_id == flight)).all()
        assert [(row.finding_class, row.notice_id is not None) for row in rows] == [
            ("exposed_soil", True)
        ]


def test_a_patch_merged_into_its_neighbour_with_the_same_notice_is_found_once(
    imported: World,
) -> None:
    """Two patches of soil seen apart by the first frames, both evidence of the site's one
    notice, seen as one patch by later frames: one finding (with the notice) remains, the
    merged patch's outline; before, the other stayed too, as the notice's evidence, and the
    same soil was found twice (the live-flight test above showed it with the sim-v16a model)."""
    flight = new_flight(imported)
    left = findings_for(imported, "S1", "exposed_soil", 8.0)
    right = findings_for(imported, "S1", "exposed_soil", 6.0, shift=10.0)
    apart = {"type": "FeatureCollection", "features": left["features"] + right["features"]}
    merged = findings_for(imported, "S1", "exposed_soil", 18.0)
    sessions = session_factory(make_engine(imported.settings.database.url))
    with sessions() as session:
        first = sync_flight(session, imported.settings, flight, apart, final=False)
    assert first.created == 2 and len(first.notices_issued) == 1
    with sessions() as session:
        notices = {row.notice_id for row in session.scalars(select(Finding))}
    assert len(notices) == 1 and None not in notices  # both are the notice's evidence
    with sessions() as session:
        sync_flight(session, imported.settings, flight, merged, final=True)
    with sessions() as session:
        rows = session.scalars(select(Finding).where(Finding.flight_id == flight)).all()
        assert [(row.notice_id, round(row.area_m2)) for row in rows] == [(notices.pop(), 324)]


def _empty() -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": []}
