"""Flying sorties with DroneKit against the simulated vehicle over loopback (accelerated)."""

from __future__ import annotations

import csv
import json
import math
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from pyproj import Geod
from shapely.geometry import LineString, Point
from typer.testing import CliRunner

from dustpatrol.cli import app
from geo.frames import read_frame_meta
from missions.dronekit_adapter import DroneLink, LinkError
from missions.files import write_plan_files
from missions.fly import FlightOptions, FlightOutcome, PreflightError, Progress, fly
from missions.model import DroneProfile, LaunchPoint, MavCmd, PatrolPlan, Sortie
from missions.planner import plan_patrol
from sim.camera import camera_preset
from sim.kinds import GnssMode
from sim.vehicle import Failures, SimVehicle, VehicleConfig
from sim.world import District

SPEEDUP = 60.0
GEOD = Geod(ellps="WGS84")


def patrol(district: District, n_sites: int) -> tuple[PatrolPlan, LaunchPoint]:
    sites = district.sites[:n_sites]
    registry = gpd.GeoDataFrame(
        {"site_id": [s.site_id for s in sites]},
        geometry=gpd.GeoSeries([s.geometry for s in sites], crs=district.crs).to_crs(4326),
    )
    centre = sites[0].geometry.centroid
    lon, lat = district.to_lonlat().transform(centre.x - 150, centre.y - 150)
    launch = LaunchPoint(float(lat), float(lon))
    return plan_patrol(registry, [launch], [DroneProfile()], solver_time_s=0.5), launch


@pytest.fixture
def vehicle_factory(tmp_path: Path) -> Iterator[object]:
    started: list[SimVehicle] = []

    def make(
        launch: LaunchPoint,
        district: District | None = None,
        transport: str = "tcp",
        **config: object,
    ) -> SimVehicle:
        config.setdefault("speedup", SPEEDUP)
        vehicle = SimVehicle(
            VehicleConfig(
                launch.lat_deg,
                launch.lon_deg,
                flight_folder=tmp_path / "frames" if district is not None else None,
                camera=camera_preset("m3e", 0.04),
                **config,  # type: ignore[arg-type]
            ),
            district,
        )
        vehicle.start(transport=transport)
        started.append(vehicle)
        return vehicle

    yield make
    for vehicle in started:
        vehicle.stop()


def address(vehicle: SimVehicle) -> str:
    return f"tcp:127.0.0.1:{vehicle.port}"


def test_flies_a_three_site_patrol_and_frames_land_on_the_survey_lines(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 3)
    sortie = plan.sorties[0]
    assert len(plan.sorties) == 1 and len(sortie.visits) == 3
    # Newer ArduPilot refuses float MISSION_ITEMs: the executor uploads MISSION_ITEM_INT.
    vehicle = vehicle_factory(launch, district, failures=Failures(no_float_mission_items=True))  # type: ignore[operator]
    log = fly(sortie, address(vehicle), log_folder=tmp_path / "log")
    assert log.outcome is FlightOutcome.COMPLETED
    assert len(log.triggers) == sortie.expected_frames
    assert log.lower_quality_frames == 0

    # Trigger spacing along each survey line is the planned trigger distance.
    trigger_distances = [
        i.param1 for i in sortie.items if i.command is MavCmd.DO_SET_CAM_TRIGG_DIST and i.param1 > 0
    ]
    spacing = [
        GEOD.inv(a.lon_deg, a.lat_deg, b.lon_deg, b.lat_deg)[2]
        for a, b in zip(vehicle.triggers, vehicle.triggers[1:], strict=False)
    ]
    # The simulated camera checks the distance 50 times a (simulated) second, as ArduPilot
    # does: each frame comes at most one check late (0.16 m at the survey speed of 8 m/s).
    late = 8.0 / 50.0 + 0.01
    on_line = [d for d in spacing if any(0 <= d - t < late for t in trigger_distances)]
    assert len(on_line) >= len(spacing) - 2 * len(trigger_distances)

    # Every trigger lies on a planned survey line.
    lines = _survey_lines(sortie, district)
    for trigger in vehicle.triggers:
        east, north = district.from_lonlat().transform(trigger.lon_deg, trigger.lat_deg)
        assert min(line.distance(Point(east, north)) for line in lines) < 0.05

    # Rendered frames carry RTK positions within centimetres of the trigger.
    frames = sorted(vehicle.wait_rendered())
    assert len(frames) == len(vehicle.triggers)
    meta = read_frame_meta(frames[0])
    first = vehicle.triggers[0]
    assert GEOD.inv(meta.lon_deg, meta.lat_deg, first.lon_deg, first.lat_deg)[2] < 0.15
    assert meta.rtk_flag == 50

    assert log.folder == tmp_path / "log" / sortie.name
    with (log.folder / "triggers.csv").open(encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == len(log.triggers) + 1
    summary = json.loads((log.folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["outcome"] == "completed" and summary["shortfall"] is None
    assert summary["survey_frames"] == summary["expected_frames"] == sortie.expected_frames
    first_point, last_point = log.track[0], log.track[-1]
    assert GEOD.inv(first_point[2], first_point[1], launch.lon_deg, launch.lat_deg)[2] < 1.0
    assert GEOD.inv(last_point[2], last_point[1], launch.lon_deg, launch.lat_deg)[2] < 1.0


def _survey_lines(sortie: Sortie, district: District) -> list[LineString]:
    to_utm = district.from_lonlat()
    lines, previous, trigger = [], None, 0.0
    for item in sortie.items:
        if item.command is MavCmd.DO_SET_CAM_TRIGG_DIST:
            trigger = item.param1
        elif item.command is MavCmd.NAV_WAYPOINT:
            point = to_utm.transform(item.lon_deg, item.lat_deg)
            if trigger > 0 and previous is not None:
                lines.append(LineString([previous, point]))
            previous = point
    return lines


def test_link_loss_brings_the_vehicle_home(district: District, vehicle_factory: object) -> None:
    plan, launch = patrol(district, 1)
    # The ground-station failsafe counts wall seconds (heartbeats are real time): fly slower.
    vehicle = vehicle_factory(  # type: ignore[operator]
        launch,
        speedup=20.0,
        failures=Failures(link_drop_at_s=35.0, link_drop_for_s=5.0, link_drop_closes_socket=True),
    )
    log = fly(plan.sorties[0], address(vehicle), FlightOptions(reconnect_after_s=1.0))
    assert log.outcome is FlightOutcome.RETURNED_LINK_LOSS
    texts = [text for _, text in log.events]
    assert "reconnected" in texts  # a fresh connection once the vehicle answers again
    assert any(t.startswith("link lost") for t in texts) and any(
        t.startswith("link restored") for t in texts
    )
    assert any("GCS failsafe" in text for _, text in vehicle.events)
    assert len(log.triggers) < plan.sorties[0].expected_frames
    assert math.hypot(vehicle.east, vehicle.north) < 1.0 and not vehicle.armed


def test_low_battery_makes_the_executor_return(district: District, vehicle_factory: object) -> None:
    plan, launch = patrol(district, 1)
    vehicle = vehicle_factory(
        launch, failures=Failures(battery_sag_at_s=80.0, battery_sag_to_pct=20.0)
    )  # type: ignore[operator]
    log = fly(plan.sorties[0], address(vehicle), FlightOptions(battery_reserve_pct=25.0))
    assert log.outcome is FlightOutcome.RETURNED_LOW_BATTERY
    assert any("below the reserve" in text for _, text in log.events)
    assert math.hypot(vehicle.east, vehicle.north) < 1.0 and not vehicle.armed


def test_refuses_to_launch_without_rtk_unless_told(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle = vehicle_factory(launch, gnss=GnssMode.SINGLE)  # type: ignore[operator]
    with pytest.raises(PreflightError, match="--allow-no-rtk"):
        fly(plan.sorties[0], address(vehicle))
    assert not vehicle.armed
    log = fly(plan.sorties[0], address(vehicle), FlightOptions(require_rtk_fixed=False))
    assert log.outcome is FlightOutcome.COMPLETED
    assert log.lower_quality_frames == len(log.triggers) > 0


def test_refuses_a_sortie_bigger_than_the_battery_left(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle = vehicle_factory(launch)  # type: ignore[operator]
    vehicle.battery_pct = 30.0
    with pytest.raises(PreflightError, match="change the battery"):
        fly(plan.sorties[0], address(vehicle))


def test_connect_gives_up_on_a_silent_port() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted: list[socket.socket] = []
    worker = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    worker.start()
    try:
        with pytest.raises(LinkError):
            DroneLink.connect(f"tcp:127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
    finally:
        for connection in accepted:
            connection.close()
        server.close()


def test_fly_command_flies_a_plan_file(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    written = write_plan_files(plan, tmp_path / "plan")
    plan_file = next(p for p in written if p.suffix == ".plan")
    vehicle = vehicle_factory(launch)  # type: ignore[operator]
    result = CliRunner().invoke(
        app, ["fly", str(plan_file), "--connect", address(vehicle), "--log", str(tmp_path / "logs")]
    )
    assert result.exit_code == 0, result.output
    assert "completed" in result.output
    summary = json.loads(
        next((tmp_path / "logs").rglob("summary.json")).read_text(encoding="utf-8")
    )
    assert summary["frames"] == plan.sorties[0].expected_frames
    assert np.isfinite(summary["distance_m"])


def test_ctrl_c_commands_rtl_and_keeps_watching_until_landed(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle = vehicle_factory(launch)  # type: ignore[operator]
    pressed: list[bool] = []

    def operator(progress: Progress) -> None:
        if progress.frames >= 2 and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    log = fly(plan.sorties[0], address(vehicle), on_progress=operator)
    assert log.outcome is FlightOutcome.RETURNED_INTERRUPTED
    assert any("commanding RTL" in text for _, text in log.events)
    assert math.hypot(vehicle.east, vehicle.north) < 1.0 and not vehicle.armed


def test_vehicle_speaks_udp_like_sitl(vehicle_factory: object) -> None:
    vehicle = vehicle_factory(LaunchPoint(36.48, 115.45), transport="udp")  # type: ignore[operator]
    link = DroneLink.connect(f"udp:127.0.0.1:{vehicle.port}", timeout_s=10.0)
    try:
        state = link.state()
        assert state.mode == "STABILIZE" and state.gps_fix_type == 6
        assert link.home()[:2] == pytest.approx((36.48, 115.45))
    finally:
        link.close()
