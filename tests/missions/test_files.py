"""Mission files: QGC .plan and .waypoints round trips, KML, DJI WPML, the plan command."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from dustpatrol.cli import app
from geo.crs import WGS84, transformer
from missions.files import (
    MissionFileError,
    camera_footprints,
    capture_points,
    kml_document,
    qgc_plan,
    read_qgc_plan,
    read_waypoints,
    waypoints_text,
    wpml_kmz,
    write_plan_files,
)
from missions.model import DroneProfile, MavCmd, MissionItem, PatrolPlan, SiteMode
from missions.planner import plan_patrol
from sim.export import write_district
from sim.world import District
from tests.missions.test_planning import E0, N0, UTM, launch_at, registry, to_lonlat

KML = "{http://www.opengis.net/kml/2.2}"
WPML = "{http://www.dji.com/wpmz/1.0.6}"


@pytest.fixture(scope="module")
def plan() -> PatrolPlan:
    sites = [box(E0, N0, E0 + 300, N0 + 150), box(E0 + 800, N0 + 200, E0 + 900, N0 + 300)]
    zone = to_lonlat(box(E0 + 400, N0 - 300, E0 + 600, N0 + 600))
    return plan_patrol(
        registry(sites),
        [launch_at(-200, -100)],
        [DroneProfile()],
        no_fly=[zone],
        modes={"S002": SiteMode.CHECK},
        solver_time_s=0.5,
    )


def same_items(read: Sequence[MissionItem], written: Sequence[MissionItem]) -> None:
    assert len(read) == len(written)
    for a, b in zip(read, written, strict=True):
        for field in (
            "command",
            "param1",
            "param2",
            "param3",
            "param4",
            "lat_deg",
            "lon_deg",
            "altitude_m",
        ):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-7, nan_ok=True), (
                field
            )


def test_qgc_plan_round_trip(plan: PatrolPlan, tmp_path: Path) -> None:
    sortie = plan.sorties[0]
    path = tmp_path / "s.plan"
    path.write_text(json.dumps(qgc_plan(sortie, plan)), encoding="utf-8")
    home, items = read_qgc_plan(path)
    assert home[:2] == (sortie.launch.lat_deg, sortie.launch.lon_deg)
    same_items(items, sortie.items)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["fileType"] == "Plan"
    fence = document["geoFence"]["polygons"]
    assert len(fence) == 1 and fence[0]["inclusion"] is False
    assert document["rallyPoints"]["points"][0][:2] == [
        sortie.launch.lat_deg,
        sortie.launch.lon_deg,
    ]


def test_waypoints_round_trip(plan: PatrolPlan, tmp_path: Path) -> None:
    sortie = plan.sorties[0]
    path = tmp_path / "s.waypoints"
    path.write_text(waypoints_text(sortie), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("QGC WPL 110\n0\t1\t0\t16\t")
    home, items = read_waypoints(path)
    assert home[:2] == pytest.approx((sortie.launch.lat_deg, sortie.launch.lon_deg))
    # Mission Planner refuses NaN: an unset waypoint yaw is written as 0 there.
    unset_as_zero = [replace(i, param4=0.0) if math.isnan(i.param4) else i for i in sortie.items]
    same_items(items, unset_as_zero)
    assert "nan" not in text.lower()


def test_kml_shows_routes_footprints_and_no_fly(plan: PatrolPlan) -> None:
    root = ElementTree.fromstring(kml_document(plan))
    placemarks = list(root.iter(f"{KML}Placemark"))
    footprints = [p for p in placemarks if p.findtext(f"{KML}styleUrl") == "#footprint"]
    routes = [p for p in placemarks if p.findtext(f"{KML}name") == "route"]
    assert len(routes) == len(plan.sorties)
    survey_frames = sum(len(camera_footprints(s, plan.settings)) for s in plan.sorties)
    assert len(footprints) == survey_frames > 0
    assert any(p.findtext(f"{KML}name") == "no-fly zone" for p in placemarks)


def test_wpml_kmz_holds_template_and_waylines(plan: PatrolPlan) -> None:
    sortie = plan.sorties[0]
    data = wpml_kmz(sortie)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["wpmz/template.kml", "wpmz/waylines.wpml"]
        waylines = ElementTree.fromstring(archive.read("wpmz/waylines.wpml"))
        ElementTree.fromstring(archive.read("wpmz/template.kml"))
    placemarks = list(waylines.iter(f"{KML}Placemark"))
    waypoints = [i for i in sortie.items if i.command is MavCmd.NAV_WAYPOINT]
    assert len(placemarks) == len(waypoints)
    assert [int(p.findtext(f"{WPML}index") or -1) for p in placemarks] == list(
        range(len(waypoints))
    )
    triggers = [t.text for t in waylines.iter(f"{WPML}actionTriggerType")]
    lines = sum(
        1 for i in sortie.items if i.command is MavCmd.DO_SET_CAM_TRIGG_DIST and i.param1 > 0
    )
    assert triggers.count("multipleDistance") == lines
    assert triggers.count("reachPoint") == 4 + lines  # S002's check shots, nadir per line
    assert waylines.findtext(f".//{WPML}executeHeightMode") == "relativeToStartPoint"
    assert wpml_kmz(sortie) == data  # a pure function: byte-identical


def test_write_plan_files_writes_every_format_per_sortie(plan: PatrolPlan, tmp_path: Path) -> None:
    written = write_plan_files(plan, tmp_path)
    names = {p.name for p in written}
    for sortie in plan.sorties:
        for suffix in (".plan", ".waypoints", ".kml", ".kmz"):
            assert sortie.name + suffix in names
    assert "patrol.kml" in names


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"fileType": "Survey"}', "not 'Plan'"),
        ("{not json", "not a valid QGroundControl plan"),
        (
            '{"fileType": "Plan", "mission": {"plannedHomePosition": [1, 2, 3], '
            '"items": [{"type": "ComplexItem"}]}}',
            "ComplexItem",
        ),
    ],
)
def test_bad_plan_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.plan"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MissionFileError, match=message):
        read_qgc_plan(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("QGC WPL 100\n", "QGC WPL 110"),
        ("QGC WPL 110\n0\t1\t0\t16\t0\n", "5 fields"),
        ("QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\tx\t1\t1\t1\n", "non-number"),
        (
            "QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\t1\t1\t1\t1\n"
            "1\t0\t3\t999\t0\t0\t0\t0\t1\t1\t1\t1\n",
            "999",
        ),
    ],
)
def test_bad_waypoints_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.waypoints"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MissionFileError, match=message):
        read_waypoints(path)


def test_plan_command_on_a_simulated_registry(district: District, tmp_path: Path) -> None:
    write_district(district, tmp_path / "district")
    lon, lat = district.to_lonlat().transform(*district.origin_utm)
    result = CliRunner().invoke(
        app,
        [
            "plan",
            str(tmp_path / "district" / "sites.geojson"),
            "--launch",
            f"{lat},{lon}",
            "--drones",
            "2",
            "--solver-seconds",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lowest survey coverage" in result.output
    assert list((tmp_path / "out").glob("*.plan"))


def test_plan_command_refuses_bad_input(district: District, tmp_path: Path) -> None:
    write_district(district, tmp_path)
    runner = CliRunner()
    sites = str(tmp_path / "sites.geojson")
    result = runner.invoke(
        app, ["plan", sites, "--launch", "nowhere", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "LAT,LON" in result.output
    result = runner.invoke(
        app,
        [
            "plan",
            sites,
            "--launch",
            "36.48,115.45",
            "--altitude",
            "150",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "legal cap" in result.output


def test_capture_points_are_the_pictures_the_mission_takes(plan: PatrolPlan) -> None:
    """Nadir frames along the survey lines (one per footprint, facing along the line) and the
    check visit's oblique shots, each after the yaw and gimbal commands that set it up."""
    for sortie in plan.sorties:
        points = capture_points(sortie)
        nadir = [p for p in points if p.gimbal_pitch_deg == -90.0]
        oblique = [p for p in points if p.gimbal_pitch_deg != -90.0]
        assert len(nadir) == len(camera_footprints(sortie, plan.settings))
        assert len(points) == sum(v.expected_frames for v in sortie.visits)
        checks = [v for v in sortie.visits if v.mode is SiteMode.CHECK]
        assert len(oblique) == sum(v.expected_frames for v in checks)
        assert all(p.gimbal_pitch_deg == plan.settings.check_pitch_deg for p in oblique)
        yaws = [i.param1 for i in sortie.items if i.command is MavCmd.CONDITION_YAW]
        assert [p.heading_deg for p in oblique] == yaws
        assert all(p.altitude_m == sortie.altitude_m for p in points)
    # frames of one survey line share its heading, a trigger distance apart
    line = [p for p in capture_points(plan.sorties[0]) if p.gimbal_pitch_deg == -90.0]
    first, second = line[0], line[1]
    assert first.heading_deg == second.heading_deg
    to_utm = transformer(WGS84, UTM)
    step = math.dist(
        to_utm.transform(first.lon_deg, first.lat_deg),
        to_utm.transform(second.lon_deg, second.lat_deg),
    )
    assert step == pytest.approx(plan.settings.trigger_distance_m, rel=1e-3)
