"""Planning: survey geometry, battery-feasible sorties, no-fly zones, coverage, bad input."""

from __future__ import annotations

import itertools
import math

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyproj import CRS
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

from geo.crs import WGS84, transformer
from missions.model import (
    DroneProfile,
    LaunchPoint,
    MavCmd,
    PatrolPlan,
    PlanningError,
    SiteMode,
    SurveySettings,
)
from missions.planner import plan_patrol
from missions.survey import survey_pattern

UTM = CRS.from_epsg(32650)
E0, N0 = 500_000.0, 4_000_000.0
TO_WGS84 = transformer(UTM, WGS84)
TO_UTM = transformer(WGS84, UTM)


def registry(polygons: list[Polygon]) -> gpd.GeoDataFrame:
    series = gpd.GeoSeries(polygons, crs=UTM).to_crs(4326)
    return gpd.GeoDataFrame(
        {"site_id": [f"S{i + 1:03d}" for i in range(len(polygons))]}, geometry=series
    )


def launch_at(e: float, n: float) -> LaunchPoint:
    lon, lat = TO_WGS84.transform(E0 + e, N0 + n)
    return LaunchPoint(lat, lon)


def to_lonlat(polygon: Polygon) -> Polygon:
    xs, ys = np.asarray(polygon.exterior.coords).T
    return Polygon(np.column_stack(TO_WGS84.transform(xs, ys)))


def positions_utm(plan: PatrolPlan) -> list[list[tuple[float, float]]]:
    """Per sortie: launch, every position waypoint, launch again (the path flown)."""
    paths = []
    for sortie in plan.sorties:
        launch = TO_UTM.transform(sortie.launch.lon_deg, sortie.launch.lat_deg)
        points = [launch]
        points += [
            TO_UTM.transform(i.lon_deg, i.lat_deg)
            for i in sortie.items
            if i.command is MavCmd.NAV_WAYPOINT
        ]
        points.append(launch)
        paths.append(points)
    return paths


@pytest.mark.parametrize("angle", [0.0, 27.0, 63.0, 90.0, 135.0])
def test_survey_grid_covers_a_rotated_site(angle: float) -> None:
    site = affinity.rotate(box(E0, N0, E0 + 420, N0 + 160), angle)
    pattern = survey_pattern("S", site, SurveySettings())
    assert pattern.coverage_ratio >= 0.99
    across, along = SurveySettings().camera.footprint_m(100.0)
    assert pattern.line_spacing_m == pytest.approx(across * 0.35)
    assert pattern.trigger_distance_m == pytest.approx(along * 0.25)
    # Lines run along the long side: their heading follows the rotation.
    first = pattern.legs[0]
    direction = (
        math.degrees(math.atan2(first.end[1] - first.start[1], first.end[0] - first.start[0])) % 180
    )
    assert direction == pytest.approx(angle % 180, abs=1e-4)


def test_survey_lines_skip_a_no_fly_strip() -> None:
    site = box(E0, N0, E0 + 600, N0 + 200)
    strip = box(E0 + 250, N0 - 100, E0 + 320, N0 + 300)
    pattern = survey_pattern("S", site, SurveySettings(), no_fly=strip)
    for leg in pattern.legs:
        assert not LineString([leg.start, leg.end]).intersects(strip)


def test_plan_visits_every_site_within_battery_and_covers_it() -> None:
    sites = [
        box(E0 + 500 * i, N0 + 300 * (i % 2), E0 + 500 * i + 200, N0 + 300 * (i % 2) + 150)
        for i in range(5)
    ]
    plan = plan_patrol(
        registry(sites), [launch_at(-200, -200)], [DroneProfile()] * 2, solver_time_s=1
    )
    assert not plan.dropped
    assert {v.site_id for s in plan.sorties for v in s.visits} == {f"S{i:03d}" for i in range(1, 6)}
    assert min(plan.coverage.values()) >= 0.99
    for sortie in plan.sorties:
        assert sortie.duration_s <= DroneProfile().usable_time_s
        assert sortie.items[0].command is MavCmd.NAV_TAKEOFF
        assert sortie.items[-1].command is MavCmd.NAV_RETURN_TO_LAUNCH
        triggers = [i for i in sortie.items if i.command is MavCmd.DO_SET_CAM_TRIGG_DIST]
        assert triggers and triggers[-1].param1 == 0.0  # the camera stops before going home
    assert plan.expected_frames == sum(s.expected_frames for s in plan.sorties)


def test_a_site_too_big_for_one_battery_is_split_across_sorties() -> None:
    big = box(E0, N0, E0 + 1500, N0 + 1200)
    short_battery = DroneProfile(flight_time_s=15 * 60)
    plan = plan_patrol(registry([big]), [launch_at(-100, -100)], [short_battery], solver_time_s=1)
    parts = [v for s in plan.sorties for v in s.visits]
    assert len(parts) > 1 and {v.parts for v in parts} == {len(parts)}
    assert all(s.duration_s <= short_battery.usable_time_s for s in plan.sorties)
    assert plan.coverage["S001"] >= 0.99


def test_routes_go_around_a_no_fly_zone() -> None:
    sites = [box(E0 + 1500, N0, E0 + 1700, N0 + 150)]
    wall = box(E0 + 600, N0 - 800, E0 + 900, N0 + 900)  # between launch and site
    plan = plan_patrol(
        registry(sites),
        [launch_at(0, 0)],
        [DroneProfile()],
        no_fly=[to_lonlat(wall)],
        solver_time_s=1,
    )
    assert not plan.dropped
    for path in positions_utm(plan):
        for a, b in itertools.pairwise(path):
            assert not LineString([a, b]).intersects(wall), (a, b)


def test_check_mode_takes_four_oblique_shots() -> None:
    plan = plan_patrol(
        registry([box(E0, N0, E0 + 100, N0 + 80)]),
        [launch_at(-300, 0)],
        [DroneProfile()],
        modes={"S001": SiteMode.CHECK},
        solver_time_s=0.5,
    )
    items = plan.sorties[0].items
    shots = [i for i in items if i.command is MavCmd.DO_DIGICAM_CONTROL]
    mounts = [i for i in items if i.command is MavCmd.DO_MOUNT_CONTROL]
    assert len(shots) == 4 and all(m.param1 == -45.0 for m in mounts)
    assert plan.sorties[0].expected_frames == 4


def test_site_inside_a_no_fly_zone_is_dropped_with_a_reason() -> None:
    inside = box(E0 + 1000, N0, E0 + 1100, N0 + 100)
    zone = box(E0 + 900, N0 - 100, E0 + 1200, N0 + 200)
    plan = plan_patrol(
        registry([box(E0, N0, E0 + 100, N0 + 100), inside]),
        [launch_at(-200, 0)],
        [DroneProfile()],
        no_fly=[to_lonlat(zone)],
        solver_time_s=0.5,
    )
    assert [(d.site_id, "no-fly" in d.reason) for d in plan.dropped] == [("S002", True)]


def test_site_out_of_range_is_dropped_with_a_reason() -> None:
    far = box(E0 + 40_000, N0, E0 + 40_100, N0 + 100)
    plan = plan_patrol(
        registry([far]), [launch_at(0, 0)], [DroneProfile(flight_time_s=600)], solver_time_s=0.5
    )
    assert plan.sorties == ()
    assert "too far" in plan.dropped[0].reason or "battery" in plan.dropped[0].reason


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SurveySettings(altitude_m=150.0), "legal cap"),
        (lambda: SurveySettings(front_overlap=1.2), "front_overlap"),
        (lambda: DroneProfile(cruise_speed_m_s=0.0), "cruise_speed_m_s"),
        (lambda: LaunchPoint.parse("36.4"), "LAT,LON"),
        (lambda: LaunchPoint(95.0, 115.0), "not a lat/lon"),
    ],
)
def test_bad_settings_are_refused(call: object, message: str) -> None:
    with pytest.raises(PlanningError, match=message):
        call()  # type: ignore[operator]


def test_bad_plan_inputs_are_refused() -> None:
    sites = registry([box(E0, N0, E0 + 100, N0 + 100)])
    launch = [launch_at(-100, 0)]
    with pytest.raises(PlanningError, match="no sites"):
        plan_patrol(sites.iloc[:0], launch, [DroneProfile()])
    with pytest.raises(PlanningError, match="fleet is empty"):
        plan_patrol(sites, launch, [])
    with pytest.raises(PlanningError, match="launch point"):
        plan_patrol(sites, [], [DroneProfile()])
    with pytest.raises(PlanningError, match="EPSG:4326"):
        plan_patrol(sites.to_crs(UTM), launch, [DroneProfile()])
    with pytest.raises(PlanningError, match="unknown sites"):
        plan_patrol(sites, launch, [DroneProfile()], modes={"NOPE": SiteMode.CHECK})
    zone = to_lonlat(box(E0 - 300, N0 - 100, E0 - 50, N0 + 100))
    with pytest.raises(PlanningError, match="inside a no-fly zone"):
        plan_patrol(sites, launch, [DroneProfile()], no_fly=[zone])


site_boxes = st.lists(
    st.tuples(
        st.floats(0, 3000),
        st.floats(0, 3000),
        st.floats(40, 400),
        st.floats(40, 300),
        st.floats(0, 180),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found by this test: the solver timed survey lines without the overrun past their last frame
# that the sorties fly, so a full sortie came out 1.6 s over the battery budget.
@example(
    boxes=[(0.0, 0.0, 194.0, 267.0, 0.0), (0.0, 0.0, 144.0, 187.0, 0.0),
           (0.0, 0.0, 169.0, 187.0, 0.0), (124.0, 0.0, 101.0, 241.0, 0.0),
           (0.0, 2176.0, 40.0, 40.0, 0.0), (2755.0, 0.0, 347.0, 119.0, 0.0)],
    zone=(500.0, 500.0, 50.0),
    drones=1,
    altitude=50.0,
)  # fmt: skip
@given(
    boxes=site_boxes,
    zone=st.tuples(st.floats(500, 2500), st.floats(500, 2500), st.floats(50, 400)),
    drones=st.integers(1, 3),
    altitude=st.floats(40, 120),
)
def test_planner_properties(
    boxes: list[tuple[float, float, float, float, float]],
    zone: tuple[float, float, float],
    drones: int,
    altitude: float,
) -> None:
    polygons = [
        affinity.rotate(box(E0 + x, N0 + y, E0 + x + w, N0 + y + h), a) for x, y, w, h, a in boxes
    ]
    zx, zy, zr = zone
    no_fly = Point(E0 + zx, N0 + zy).buffer(zr, quad_segs=4)
    launch = launch_at(-500, -500)
    plan = plan_patrol(
        registry(polygons),
        [launch],
        [DroneProfile()] * drones,
        SurveySettings(altitude_m=altitude),
        no_fly=[to_lonlat(no_fly)],
        solver_time_s=0.3,
    )
    flown = {v.site_id for s in plan.sorties for v in s.visits}
    assert flown | {d.site_id for d in plan.dropped} == {
        f"S{i + 1:03d}" for i in range(len(polygons))
    }
    for sortie in plan.sorties:
        assert sortie.duration_s <= DroneProfile().usable_time_s + 1e-6
        assert all(i.altitude_m <= 120.0 for i in sortie.items if i.is_position)
    for path in positions_utm(plan):
        for a, b in itertools.pairwise(path):
            assert not no_fly.contains(Point(a))
            assert not LineString([a, b]).crosses(no_fly) and not no_fly.contains(
                LineString([a, b])
            )
    for site_id in flown:
        if not any(d.site_id == site_id for d in plan.dropped):
            polygon = polygons[int(site_id[1:]) - 1]
            if not polygon.intersects(no_fly.buffer(30)):
                assert plan.coverage[site_id] >= 0.99, site_id


def test_the_distance_matrix_matches_the_paths_one_by_one() -> None:
    from missions.nofly import NoFlyMap

    rng = np.random.default_rng(4)
    zones = [
        box(E0 + 600, N0 - 800, E0 + 900, N0 + 900),
        affinity.rotate(box(E0 + 1200, N0 + 200, E0 + 1300, N0 + 1200), 30),
    ]
    nofly = NoFlyMap(zones, margin_m=10.0)
    points = [
        (float(x), float(y))
        for x, y in rng.uniform((E0 - 500, N0 - 1000), (E0 + 2500, N0 + 1500), (40, 2))
        if not nofly.contains((float(x), float(y)))
    ]
    matrix = nofly.distance_matrix(points[:20], points[20:])
    for i, a in enumerate(points[:20]):
        for j, b in enumerate(points[20:]):
            assert matrix[i, j] == pytest.approx(nofly.distance(a, b), rel=1e-12), (i, j)
            assert matrix[i, j] >= math.dist(a, b) - 1e-9
    assert (
        matrix > np.hypot(*(np.array(points[:20])[:, None] - np.array(points[20:])[None]).T).T + 1
    ).any()
