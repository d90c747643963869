"""Flight safety and mission files (the flight-safety issue): each test makes the simulated
vehicle behave like a case that once went wrong, over a real MAVLink link on loopback."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from dustpatrol.cli import app
from missions.dronekit_adapter import DroneLink, LinkError
from missions.errors import MissionError
from missions.files import (
    MissionFileError,
    qgc_plan,
    read_waypoints,
    sortie_from_plan_file,
    waypoints_text,
    wpml_kmz,
    write_plan_files,
)
from missions.fly import (
    FlightOptions,
    FlightOutcome,
    PreflightError,
    Progress,
    StopAction,
    fly,
)
from missions.model import LaunchPoint, MavCmd, PatrolPlan, PlanningError
from sim.vehicle import Failures, SimVehicle
from sim.world import District
from tests.missions.test_files import plan as plan
from tests.missions.test_fly import address, patrol
from tests.missions.test_fly import vehicle_factory as vehicle_factory

HOME = LaunchPoint(36.48, 115.45)


# --- Item 1: vehicles that ask with MISSION_REQUEST_INT (PX4, the protocol) or MISSION_REQUEST


@pytest.mark.parametrize("request_int", [True, False], ids=["MISSION_REQUEST_INT", "legacy"])
def test_upload_answers_either_kind_of_item_request(
    district: District, vehicle_factory: object, request_int: bool
) -> None:
    plan, launch = patrol(district, 1)
    sortie = plan.sorties[0]
    vehicle: SimVehicle = vehicle_factory(launch, mission_request_int=request_int)  # type: ignore[operator]
    link = DroneLink.connect(address(vehicle), timeout_s=10.0)
    try:
        link.upload((launch.lat_deg, launch.lon_deg), sortie.items, timeout_s=15.0)
        read = link.read_back(timeout_s=15.0)[1:]
    finally:
        link.close()
    assert [command for command, *_ in read] == [int(i.command) for i in sortie.items]
    assert len(vehicle.mission) == len(sortie.items) + 1
    waypoints = [i for i in sortie.items if i.command is MavCmd.NAV_WAYPOINT]
    stored = [m for m in vehicle.mission[1:] if m["command"] == int(MavCmd.NAV_WAYPOINT)]
    assert [v for m in stored for v in (m["lat"], m["lon"])] == pytest.approx(
        [v for w in waypoints for v in (w.lat_deg, w.lon_deg)], abs=2e-7
    )


def test_a_refused_upload_names_the_vehicles_reason(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle = vehicle_factory(launch, max_mission_items=5)  # type: ignore[operator]
    link = DroneLink.connect(address(vehicle), timeout_s=10.0)
    try:
        with pytest.raises(LinkError, match="refused the mission: MAV_MISSION_NO_SPACE"):
            link.upload((launch.lat_deg, launch.lon_deg), plan.sorties[0].items, timeout_s=10.0)
    finally:
        link.close()


# --- Items 2, 3: a vehicle far from the plan, positions at (0, 0) or far away


def test_a_vehicle_whose_home_is_far_from_the_plan_is_not_flown(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    away = LaunchPoint(launch.lat_deg + 0.063, launch.lon_deg)  # 7 km north
    vehicle: SimVehicle = vehicle_factory(away)  # type: ignore[operator]
    with pytest.raises(PreflightError, match=r"home is 7,0\d\d m from the plan's launch point"):
        fly(plan.sorties[0], address(vehicle))
    assert not vehicle.armed and vehicle.mission == []
    # Allowed on purpose (a launch point moved by a few km): then it flies.
    options = FlightOptions(max_home_offset_m=8000.0, ready_timeout_s=5.0)
    assert fly(plan.sorties[0], address(vehicle), options).outcome is FlightOutcome.COMPLETED


@pytest.mark.parametrize(
    ("where", "message"),
    [((0.0, 0.0), "latitude 0, longitude 0"), ((36.9, 115.45), "km from home")],
)
def test_a_mission_position_at_null_island_or_far_away_is_refused(
    district: District, vehicle_factory: object, where: tuple[float, float], message: str
) -> None:
    plan, launch = patrol(district, 1)
    sortie = plan.sorties[0]
    number = next(n for n, i in enumerate(sortie.items) if i.command is MavCmd.NAV_WAYPOINT)
    items = list(sortie.items)
    items[number] = replace(items[number], lat_deg=where[0], lon_deg=where[1])
    vehicle: SimVehicle = vehicle_factory(launch)  # type: ignore[operator]
    with pytest.raises(MissionError, match=message):
        fly(replace(sortie, items=tuple(items)), address(vehicle))
    assert not vehicle.armed and vehicle.mission == []


# --- Item 5: readiness is waited for, and what is missing is named


def test_a_vehicle_that_becomes_ready_late_is_waited_for(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(launch, ready_after_s=4.0)  # type: ignore[operator]
    log = fly(plan.sorties[0], address(vehicle), FlightOptions(ready_timeout_s=30.0))
    assert log.outcome is FlightOutcome.COMPLETED


def test_a_vehicle_that_never_gets_ready_is_refused_naming_what_is_missing(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(launch, ready_after_s=600.0)  # type: ignore[operator]
    with pytest.raises(PreflightError) as refused:
        fly(plan.sorties[0], address(vehicle), FlightOptions(ready_timeout_s=2.0))
    text = str(refused.value)
    assert "not ready after 2 s" in text
    assert "no GNSS fix" in text and "not armable" in text and "no home position" in text
    assert not vehicle.armed


# --- Items 4, 8: SIGTERM is a stop like Ctrl-C; the camera stops before the way home


def test_sigterm_sends_the_vehicle_home_stops_the_camera_and_keeps_the_logs(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(launch)  # type: ignore[operator]
    at_stop: list[int] = []

    def service_manager(progress: Progress) -> None:
        if progress.frames >= 3 and not at_stop:
            at_stop.append(len(vehicle.triggers))
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()

    before = signal.getsignal(signal.SIGTERM)
    log = fly(plan.sorties[0], address(vehicle), on_progress=service_manager, log_folder=tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is ours only in flight
    assert log.outcome is FlightOutcome.RETURNED_INTERRUPTED
    texts = [text for _, text in log.events]
    assert any("interrupted (SIGTERM)" in t for t in texts) and "commanding RTL" in texts
    assert math.hypot(vehicle.east, vehicle.north) < 1.0 and not vehicle.armed
    # The vehicle keeps triggering in RTL (as ArduPilot does) unless told: no frames on the way
    # home beyond the one or two in flight while the stop was sent.
    assert len(vehicle.triggers) <= at_stop[0] + 2
    assert any("camera trigger distance 0.0" in text for _, text in vehicle.events)
    summary = json.loads((tmp_path / plan.sorties[0].name / "summary.json").read_text())
    assert summary["outcome"] == FlightOutcome.RETURNED_INTERRUPTED.value
    assert summary["shortfall"].startswith(f"{log.survey_frames} survey frames confirmed")


def test_hold_on_stop_leaves_the_vehicle_holding_for_the_pilot(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(launch)  # type: ignore[operator]
    presses: list[int] = []

    def operator(progress: Progress) -> None:
        if progress.frames >= 2 and len(presses) == 0:
            presses.append(progress.frames)
            raise KeyboardInterrupt
        if progress.mode == "LOITER" and len(presses) == 1:
            presses.append(progress.frames)
            raise KeyboardInterrupt  # the pilot has it: stop watching

    with pytest.raises(KeyboardInterrupt):
        fly(plan.sorties[0], address(vehicle), FlightOptions(on_stop=StopAction.HOLD), operator)
    assert vehicle.mode == "LOITER" and vehicle.armed and vehicle.alt > 10.0
    assert vehicle.trigger_distance == 0.0


def test_a_vehicle_that_goes_home_on_its_own_stops_shooting(
    district: District, vehicle_factory: object
) -> None:
    plan, launch = patrol(district, 1)
    # The vehicle's own battery failsafe (below the executor's reserve, which is set to 0).
    vehicle: SimVehicle = vehicle_factory(  # type: ignore[operator]
        launch, failures=Failures(battery_sag_at_s=80.0, battery_sag_to_pct=10.0)
    )
    log = fly(plan.sorties[0], address(vehicle), FlightOptions(battery_reserve_pct=0.0))
    assert log.outcome is FlightOutcome.RETURNED_VEHICLE_FAILSAFE
    off_survey = [t for t in log.triggers if not t.survey]
    assert len(off_survey) <= 2  # at most what was shot before the stop reached it
    assert any("camera trigger distance 0.0" in text for _, text in vehicle.events)


# --- Items 6, 9, 10: logs written as it happens, shortfalls are failures, never overwritten


def test_a_killed_vehicle_leaves_the_logs_so_far_and_no_flood_of_link_noise(
    district: District, vehicle_factory: object, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(launch)  # type: ignore[operator]
    killed: list[int] = []

    def kill(progress: Progress) -> None:
        if progress.frames >= 4 and not killed:
            killed.append(progress.frames)
            threading.Thread(target=vehicle.stop).start()

    options = FlightOptions(link_loss_grace_s=4.0, reconnect_after_s=1.0)
    with pytest.raises(LinkError, match="no heartbeat"):
        fly(plan.sorties[0], address(vehicle), options, kill, log_folder=tmp_path)
    folder = tmp_path / plan.sorties[0].name
    triggers = (folder / "triggers.csv").read_text().splitlines()
    assert len(triggers) - 1 >= killed[0]
    assert len((folder / "track.csv").read_text().splitlines()) > 10
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["outcome"] == FlightOutcome.RETURNED_LINK_LOSS.value
    events = (folder / "events.jsonl").read_text()
    assert "link lost" in events and "stopped: no heartbeat" in events
    out, err = capfd.readouterr()
    assert out.count("EOF on TCP socket") == 0 and len(err.splitlines()) < 50


def test_frames_without_camera_feedback_are_a_failed_sortie(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    plan_file = next(p for p in write_plan_files(plan, tmp_path / "plan") if p.suffix == ".plan")
    vehicle: SimVehicle = vehicle_factory(  # type: ignore[operator]
        launch, failures=Failures(no_camera_feedback=True)
    )
    logs = tmp_path / "logs"
    result = CliRunner().invoke(
        app, ["fly", str(plan_file), "--connect", address(vehicle), "--log", str(logs)]
    )
    assert result.exit_code == 1, result.output
    expected = plan.sorties[0].expected_frames
    assert f"0 survey frames confirmed, {expected} planned" in result.output
    assert len(vehicle.triggers) >= expected  # the camera did shoot: the link did not say so


def test_every_flight_of_a_sortie_keeps_its_own_logs(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    plan_file = next(p for p in write_plan_files(plan, tmp_path / "plan") if p.suffix == ".plan")
    vehicle: SimVehicle = vehicle_factory(launch)  # type: ignore[operator]
    logs = tmp_path / "logs"
    for _ in range(2):
        result = CliRunner().invoke(
            app, ["fly", str(plan_file), "--connect", address(vehicle), "--log", str(logs)]
        )
        assert result.exit_code == 0, result.output
    name = plan.sorties[0].name
    assert sorted(p.name for p in logs.iterdir()) == [name, f"{name}-2"]


# --- Items 2, 10, 14: plan files read as meant, or refused naming the problem


def _older_form(document: dict[str, object]) -> dict[str, object]:
    """The same plan with positions in "coordinate" and four params, as older QGC saved it."""
    mission = document["mission"]
    assert isinstance(mission, dict)
    for entry in mission["items"]:
        entry["coordinate"] = entry["params"][4:7]
        entry["params"] = entry["params"][:4]
    return document


def test_a_plan_in_the_older_coordinate_form_is_read_with_its_positions(
    district: District, tmp_path: Path
) -> None:
    plan, _ = patrol(district, 1)
    sortie = plan.sorties[0]
    path = tmp_path / "old.plan"
    path.write_text(json.dumps(_older_form(qgc_plan(sortie, plan))), encoding="utf-8")
    read = sortie_from_plan_file(path)
    positions = [(i.lat_deg, i.lon_deg, i.altitude_m) for i in read.items if i.is_position]
    assert positions == [
        (i.lat_deg, i.lon_deg, i.altitude_m) for i in sortie.items if i.is_position
    ]
    assert all(lat != 0.0 for lat, _, _ in positions)


def _first_waypoint(document: dict[str, Any]) -> int:
    items = document["mission"]["items"]
    return next(n for n, i in enumerate(items) if i["command"] == int(MavCmd.NAV_WAYPOINT))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d, w: d.update(version=42), "plan file version 42 is not supported"),
        (lambda d, w: d["mission"].update(version=7), "mission version 7 is not supported"),
        (
            lambda d, w: w.update(params=[0, 0, 0, 0]),
            "mission item {n}: 4 params and no coordinate",
        ),
        (
            lambda d, w: w["params"].__setitem__(4, "x"),
            "mission item {n}: params must be a list of 7 numbers",
        ),
        (
            lambda d, w: w["params"].__setitem__(slice(4, 6), [0.0, 0.0]),
            r"mission item {n} \(NAV_WAYPOINT\) is at latitude 0, longitude 0",
        ),
        (
            lambda d, w: w["params"].__setitem__(4, 37.2),
            r"mission item {n} \(NAV_WAYPOINT\) is \d+.\d km from the plan's home",
        ),
        (
            lambda d, w: d["mission"].update(plannedHomePosition=[0, 0, 0]),
            "plannedHomePosition is latitude 0, longitude 0",
        ),
    ],
)
def test_plans_that_cannot_be_flown_as_meant_are_refused(
    district: District, tmp_path: Path, change: Any, message: str
) -> None:
    plan, _ = patrol(district, 1)
    document = qgc_plan(plan.sorties[0], plan)
    index = _first_waypoint(document)
    change(document, document["mission"]["items"][index])
    path = tmp_path / "bad.plan"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(MissionFileError, match=message.replace("{n}", str(index + 1))):
        sortie_from_plan_file(path)


def test_the_fly_command_refuses_a_plan_with_a_position_at_null_island(
    district: District, tmp_path: Path
) -> None:
    plan, _ = patrol(district, 1)
    document = qgc_plan(plan.sorties[0], plan)
    document["mission"]["items"][_first_waypoint(document)]["params"][4:6] = [0.0, 0.0]
    path = tmp_path / "null.plan"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(app, ["fly", str(path), "--connect", "tcp:127.0.0.1:9"])
    assert result.exit_code == 1 and "latitude 0, longitude 0" in result.output


def test_a_later_sortie_read_from_its_plan_file_keeps_its_name(
    district: District, tmp_path: Path
) -> None:
    plan, _ = patrol(district, 1)
    second = replace(plan.sorties[0], number=2)
    path = tmp_path / f"{second.name}.plan"
    path.write_text(json.dumps(qgc_plan(second, plan)), encoding="utf-8")
    assert sortie_from_plan_file(path).name == second.name
    foreign = json.loads(path.read_text(encoding="utf-8"))
    del foreign["dustpatrol"]
    other = tmp_path / "survey-north.plan"
    other.write_text(json.dumps(foreign), encoding="utf-8")
    assert sortie_from_plan_file(other).name == "survey-north-sortie01"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1\t0\t5\t16\t0\t0\t0\t0\t36.1\t115.1\t50\t1", "line 3: MAVLink frame 5 is not supported"),
        ("1\t0\t3\t31\t0\t0\t0\t0\t36.1\t115.1\t50\t1", "line 3: MAVLink command 31 is not used"),
    ],
)
def test_waypoints_with_unknown_frames_or_commands_name_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "mp.waypoints"
    path.write_text(
        "QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\t36.1\t115.1\t40\t1\n" + line + "\n",
        encoding="utf-8",
    )
    with pytest.raises(MissionFileError, match=message):
        read_waypoints(path)


# --- Item 13: the home's real altitude, and a waypoint yaw left unset rather than north


def test_plan_files_carry_the_home_altitude_and_leave_waypoint_yaw_unset(
    district: District, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    high = LaunchPoint(launch.lat_deg, launch.lon_deg, 47.5)
    sortie = replace(plan.sorties[0], launch=high)
    document = qgc_plan(sortie, plan)
    assert document["mission"]["plannedHomePosition"][2] == 47.5
    waypoints = [i for i in document["mission"]["items"] if i["command"] == MavCmd.NAV_WAYPOINT]
    assert waypoints and all(w["params"][3] is None for w in waypoints)  # QGC's NaN: unset
    text = json.dumps(document, allow_nan=False)  # strict JSON: no NaN literal anywhere
    path = tmp_path / "high.plan"
    path.write_text(text, encoding="utf-8")
    read = sortie_from_plan_file(path)
    assert read.launch.amsl_m == 47.5
    assert all(math.isnan(i.param4) for i in read.items if i.command is MavCmd.NAV_WAYPOINT)
    home_line = waypoints_text(sortie).splitlines()[1].split("\t")
    assert float(home_line[10]) == 47.5
    assert LaunchPoint.parse("36.48,115.45,47.5").amsl_m == 47.5
    with pytest.raises(PlanningError, match="LAT,LON or LAT,LON,ALT"):
        LaunchPoint.parse("36.48,115.45,47.5,3")


# --- Item 12: DJI WPML laid out as DJI's published samples

DATA = Path(__file__).parent / "data"


def _element_paths(xml: bytes) -> set[str]:
    def walk(element: ElementTree.Element, prefix: str) -> set[str]:
        name = element.tag.split("}")[-1]
        here = f"{prefix}/{'wpml:' if 'wpmz' in element.tag else ''}{name}"
        return {here}.union(*(walk(child, here) for child in element))

    return walk(ElementTree.fromstring(xml), "")


@pytest.mark.parametrize(
    ("member", "sample"),
    [("wpmz/template.kml", "wpml_template.kml"), ("wpmz/waylines.wpml", "wpml_waylines.wpml")],
)
def test_dji_route_files_have_the_structure_of_the_wpml_samples(
    plan: PatrolPlan, member: str, sample: str
) -> None:
    sortie = plan.sorties[0]  # a survey and a site checked with oblique shots
    with zipfile.ZipFile(io.BytesIO(wpml_kmz(sortie))) as archive:
        ours = archive.read(member)
    reference = (DATA / sample).read_bytes()
    assert _element_paths(reference) - _element_paths(ours) == set()  # nothing missing
    assert _element_paths(ours) - _element_paths(reference) == set()  # nothing invented
    namespace = "{http://www.dji.com/wpmz/1.0.6}"
    root = ElementTree.fromstring(ours)
    assert root.find(f".//{namespace}missionConfig") is not None  # Pilot 2's namespace
    if member.endswith(".kml"):
        placemarks = list(root.iter("{http://www.opengis.net/kml/2.2}Placemark"))
        heights = {p.findtext(f"{namespace}height") for p in placemarks}
        assert heights == {f"{sortie.altitude_m:g}"}
        pitches = {p.findtext(f"{namespace}gimbalPitchAngle") for p in placemarks}
        check = f"{plan.settings.check_pitch_deg:g}"
        assert pitches == {"-90", check}  # surveys look straight down, checks obliquely


# --- Item 7: frames the link missed are found again on the camera's card


def test_frames_the_link_missed_are_reported_and_recovered_from_the_card(
    district: District, vehicle_factory: object, tmp_path: Path
) -> None:
    plan, launch = patrol(district, 1)
    vehicle: SimVehicle = vehicle_factory(  # type: ignore[operator]
        launch,
        district,
        speedup=20.0,
        failures=Failures(link_drop_at_s=35.0, link_drop_for_s=5.0),
    )
    log = fly(
        plan.sorties[0],
        address(vehicle),
        FlightOptions(reconnect_after_s=600.0),  # the same link comes back
        log_folder=tmp_path / "logs",
    )
    vehicle.wait_rendered()
    # The link came back with the vehicle in RTL and its camera stopped at once: every frame
    # after the first went unreported, so only the plan's count shows the shortfall.
    assert len(log.triggers) < len(vehicle.triggers)
    assert "survey frames confirmed" in (log.shortfall or "")
    recovered = log.recover(tmp_path / "frames")
    assert recovered == [t.index for t in vehicle.triggers if t.index not in {0}]
    assert log.missing_indices == []
    assert sorted(t.event.index for t in log.triggers) == [t.index for t in vehicle.triggers]
    by_index = {t.event.index: t for t in log.triggers}
    for index in recovered:
        truth = vehicle.triggers[index]
        assert by_index[index].source == "card"
        assert (
            math.dist(
                (by_index[index].event.lat_deg, by_index[index].event.lon_deg),
                (truth.lat_deg, truth.lon_deg),
            )
            < 1e-5
        )  # the frame's RTK position, within a metre
    folder = tmp_path / "logs" / plan.sorties[0].name
    rows = (folder / "triggers.csv").read_text().splitlines()
    assert len(rows) - 1 == len(vehicle.triggers) and rows[-1].endswith(",card")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["recovered_from_card"] == len(recovered) and summary["missing_indices"] == []
