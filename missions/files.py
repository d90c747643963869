"""Mission files for every ground station, written from a `Sortie` and read back.

* QGroundControl ``.plan`` (JSON: mission with plannedHomePosition, geofence with the no-fly
  polygons as exclusion zones, rally points at the launch points).
* Mission Planner ``QGC WPL 110`` ``.waypoints`` (tab separated; line 0 is home).
* KML: the route and the expected camera footprints, for Google Earth-style viewers.
* DJI WPML ``.kmz`` (``wpmz/template.kml`` + ``wpmz/waylines.wpml``) for DJI Pilot 2.

Exports are pure functions of the plan: the same plan gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, box

from geo.crs import WGS84, transformer, utm_crs_for
from missions.errors import MissionError
from missions.model import (
    LaunchPoint,
    MavCmd,
    MavFrame,
    MissionItem,
    PatrolPlan,
    PlanningError,
    Sortie,
    SurveySettings,
    check_positions,
)

MAV_AUTOPILOT_ARDUPILOTMEGA = 3
MAV_TYPE_QUADROTOR = 2
WPML_NAMESPACE = "http://www.dji.com/wpmz/1.0.6"  # as DJI Pilot 2 writes routes
KML_NAMESPACE = "http://www.opengis.net/kml/2.2"
DJI_M3E = (77, 0)  # droneEnumValue, droneSubEnumValue
DJI_M3E_CAMERA = 66  # payloadEnumValue
FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)  # zip entries carry no wall-clock time


class MissionFileError(PlanningError):
    """A mission file cannot be read."""


def _params(item: MissionItem) -> list[float | None]:
    """The seven params of a .plan item; NaN ("unset", e.g. a waypoint's yaw) is JSON null,
    as QGroundControl writes and reads it."""
    values = [
        item.param1,
        item.param2,
        item.param3,
        item.param4,
        item.lat_deg,
        item.lon_deg,
        item.altitude_m,
    ]
    return [None if math.isnan(v) else v for v in values]


# --- QGroundControl .plan ------------------------------------------------------------------


def qgc_plan(sortie: Sortie, plan: PatrolPlan) -> dict[str, Any]:
    """The QGroundControl plan document of one sortie."""
    items = []
    for number, item in enumerate(sortie.items, start=1):
        frame = (
            MavFrame.GLOBAL_RELATIVE_ALT
            if item.frame is MavFrame.GLOBAL_RELATIVE_ALT_INT
            else item.frame
        )
        entry: dict[str, Any] = {
            "type": "SimpleItem",
            "autoContinue": item.autocontinue,
            "command": int(item.command),
            "doJumpId": number,
            "frame": int(frame),
            "params": _params(item),
        }
        if item.is_position:
            entry.update(
                {"AMSLAltAboveTerrain": None, "Altitude": item.altitude_m, "AltitudeMode": 1}
            )
        items.append(entry)
    cruise = next((i.param2 for i in sortie.items if i.command is MavCmd.DO_CHANGE_SPEED), 0.0)
    return {
        "fileType": "Plan",
        "version": 1,
        "groundStation": "dustpatrol",
        "mission": {
            "version": 2,
            "firmwareType": MAV_AUTOPILOT_ARDUPILOTMEGA,
            "vehicleType": MAV_TYPE_QUADROTOR,
            "cruiseSpeed": cruise,
            "hoverSpeed": cruise,
            "globalPlanAltitudeMode": 1,
            "plannedHomePosition": [
                sortie.launch.lat_deg,
                sortie.launch.lon_deg,
                sortie.launch.amsl_m or 0.0,
            ],
            "items": items,
        },
        "geoFence": {
            "version": 2,
            "circles": [],
            "polygons": [
                {
                    "inclusion": False,
                    "version": 1,
                    "polygon": [[lat, lon] for lon, lat in ring[:-1]],
                }
                for ring in plan.no_fly_zones
            ],
        },
        "rallyPoints": {
            "version": 2,
            "points": [[sortie.launch.lat_deg, sortie.launch.lon_deg, sortie.altitude_m]],
        },
        # Ignored by QGroundControl; lets `dustpatrol fly` check the battery for this sortie.
        "dustpatrol": {
            "sortie": sortie.name,
            "drone": sortie.drone,
            "number": sortie.number,
            "altitude_m": sortie.altitude_m,
            "distance_m": round(sortie.distance_m, 1),
            "duration_s": round(sortie.duration_s, 1),
            "battery_fraction": round(sortie.battery_fraction, 4),
            "expected_frames": sortie.expected_frames,
        },
    }


QGC_PLAN_VERSION = 1  # the .plan file format QGroundControl writes and reads
QGC_MISSION_VERSION = 2  # its "mission" section
MAX_MISSION_RADIUS_M = 15_000.0  # no patrol position lies farther from its home


def read_qgc_plan(path: Path) -> tuple[tuple[float, float, float], list[MissionItem]]:
    """(planned home (lat, lon, alt), mission items) of a QGroundControl ``.plan`` file.

    Items in the current form (position in ``params`` 5-7) and in the older form QGC still
    reads (position in ``coordinate``) are both understood; file or mission versions this
    reader does not know are refused rather than guessed at."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MissionFileError(f"{path}: not a valid QGroundControl plan ({exc})") from None
    if not isinstance(document, dict) or document.get("fileType") != "Plan":
        kind = document.get("fileType") if isinstance(document, dict) else None
        raise MissionFileError(f"{path}: fileType is {kind!r}, not 'Plan'")
    if document.get("version", QGC_PLAN_VERSION) != QGC_PLAN_VERSION:
        raise MissionFileError(
            f"{path}: plan file version {document.get('version')!r} is not supported "
            f"(version {QGC_PLAN_VERSION} is); save it again with QGroundControl"
        )
    mission = document.get("mission")
    if not isinstance(mission, dict):
        raise MissionFileError(f"{path}: not a valid QGroundControl plan (no mission section)")
    if mission.get("version", QGC_MISSION_VERSION) != QGC_MISSION_VERSION:
        raise MissionFileError(
            f"{path}: mission version {mission.get('version')!r} is not supported "
            f"(version {QGC_MISSION_VERSION} is); save it again with QGroundControl"
        )
    home = _numbers(mission.get("plannedHomePosition"), 3, f"{path}: plannedHomePosition")
    entries = mission.get("items")
    if not isinstance(entries, list):
        raise MissionFileError(f"{path}: not a valid QGroundControl plan (no mission items)")
    items = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: mission item {number}"
        if not isinstance(entry, dict) or entry.get("type") != "SimpleItem":
            kind = entry.get("type") if isinstance(entry, dict) else type(entry).__name__
            raise MissionFileError(
                f"{where}: item type {kind!r} is not supported; "
                "convert complex items to simple waypoints in QGroundControl first"
            )
        raw = entry.get("params")
        if not isinstance(raw, list) or len(raw) not in (4, 7):
            raise MissionFileError(f"{where}: params must be a list of 4 or 7 numbers")
        # null is NaN to QGroundControl: "unset", e.g. a waypoint's yaw left to the vehicle.
        params = [math.nan if v is None else v for v in raw] + [0.0] * (7 - len(raw))
        params = _numbers(params, 7, f"{where}: params")
        if "coordinate" in entry:  # the older form: the position is not in the params
            params[4:7] = _numbers(entry["coordinate"], 3, f"{where}: coordinate")
        elif len(raw) == 4:
            raise MissionFileError(f"{where}: 4 params and no coordinate: the position is missing")
        try:
            command, frame = int(entry["command"]), int(entry["frame"])
        except (KeyError, TypeError, ValueError):
            raise MissionFileError(f"{where}: command and frame must be integers") from None
        items.append(_item(command, frame, params, bool(entry.get("autoContinue", True)), where))
    return (home[0], home[1], home[2]), items


def _numbers(value: object, count: int, what: str) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise MissionFileError(f"{what} must be a list of {count} numbers, not {value!r}")
    return [float(v) for v in value]


def sortie_from_plan_file(path: Path) -> Sortie:
    """A flyable `Sortie` from a ``.plan`` file (its dustpatrol block, when present, gives the
    drone, the sortie number and the battery need; a plan from elsewhere is named after its
    file and flown with the reserve check only)."""
    (lat, lon, amsl), items = read_qgc_plan(path)
    extra = json.loads(path.read_text(encoding="utf-8")).get("dustpatrol", {})
    if not isinstance(extra, dict):
        extra = {}
    if lat == 0.0 and lon == 0.0:
        raise MissionFileError(
            f"{path}: plannedHomePosition is latitude 0, longitude 0: set the launch point"
        )
    takeoff = next((i for i in items if i.command is MavCmd.NAV_TAKEOFF), None)
    if takeoff is None:
        raise MissionFileError(f"{path}: the mission has no NAV_TAKEOFF item")
    if items[-1].command is not MavCmd.NAV_RETURN_TO_LAUNCH:
        raise MissionFileError(f"{path}: the mission must end with NAV_RETURN_TO_LAUNCH")
    try:
        check_positions(items, (lat, lon), MAX_MISSION_RADIUS_M, "the plan's home")
    except MissionError as exc:
        raise MissionFileError(f"{path}: {exc}") from None
    return Sortie(
        drone=str(extra.get("drone", path.stem)),
        number=int(extra.get("number", 1)),
        launch=LaunchPoint(lat, lon, amsl or None),
        altitude_m=takeoff.altitude_m,
        items=tuple(items),
        visits=(),
        distance_m=float(extra.get("distance_m", 0.0)),
        duration_s=float(extra.get("duration_s", 0.0)),
        battery_fraction=float(extra.get("battery_fraction", 0.0)),
        expected_frames=int(extra.get("expected_frames", 0)),
    )


def _item(
    command: int, frame: int, params: Sequence[float], autocontinue: bool, where: str
) -> MissionItem:
    try:
        cmd = MavCmd(command)
    except ValueError:
        raise MissionFileError(
            f"{where}: MAVLink command {command} is not used by dustpatrol missions "
            f"(it flies {', '.join(f'{c.name} ({c.value})' for c in MavCmd)})"
        ) from None
    try:
        mav_frame = MavFrame(frame)
    except ValueError:
        raise MissionFileError(
            f"{where}: MAVLink frame {frame} is not supported "
            f"({', '.join(f'{f.name} ({f.value})' for f in MavFrame)} are)"
        ) from None
    if mav_frame is MavFrame.GLOBAL_RELATIVE_ALT:
        mav_frame = MavFrame.GLOBAL_RELATIVE_ALT_INT
    p = list(params) + [0.0] * (7 - len(params))
    return MissionItem(cmd, mav_frame, p[0], p[1], p[2], p[3], p[4], p[5], p[6], autocontinue)


# --- Mission Planner .waypoints ------------------------------------------------------------


def waypoints_text(sortie: Sortie) -> str:
    """The ``QGC WPL 110`` text of one sortie (line 0: home at the launch point)."""
    lines = ["QGC WPL 110"]
    home = [0, 1, int(MavFrame.GLOBAL), int(MavCmd.NAV_WAYPOINT), 0, 0, 0, 0]
    lines.append(
        _wpl_line(
            home, sortie.launch.lat_deg, sortie.launch.lon_deg, sortie.launch.amsl_m or 0.0, True
        )
    )
    for index, item in enumerate(sortie.items, start=1):
        frame = (
            MavFrame.GLOBAL_RELATIVE_ALT
            if item.frame is MavFrame.GLOBAL_RELATIVE_ALT_INT
            else item.frame
        )
        head = [
            index,
            0,
            int(frame),
            int(item.command),
            item.param1,
            item.param2,
            item.param3,
            item.param4,
        ]
        lines.append(
            _wpl_line(head, item.lat_deg, item.lon_deg, item.altitude_m, item.autocontinue)
        )
    return "\n".join(lines) + "\n"


def _wpl_line(head: Sequence[float], x: float, y: float, z: float, autocontinue: bool) -> str:
    """One .waypoints line. Mission Planner refuses a line holding NaN, so an unset param
    (a waypoint's yaw) is written as 0, which is how its own files leave it."""
    head = [0.0 if math.isnan(v) else v for v in head]
    cells = [str(int(v)) for v in head[:4]] + [f"{v:.8f}" for v in head[4:]]
    cells += [f"{x:.8f}", f"{y:.8f}", f"{z:.6f}", "1" if autocontinue else "0"]
    return "\t".join(cells)


def read_waypoints(path: Path) -> tuple[tuple[float, float, float], list[MissionItem]]:
    """(home (lat, lon, alt), mission items) of a Mission Planner ``.waypoints`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MissionFileError(f"{path}: not a text file (UTF-8)") from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered or not numbered[0][1].startswith("QGC WPL 110"):
        raise MissionFileError(f"{path}: first line must be 'QGC WPL 110'")
    rows: list[tuple[int, list[float]]] = []
    for number, line in numbered[1:]:
        cells = line.split("\t") if "\t" in line else line.split()
        if len(cells) != 12:
            raise MissionFileError(f"{path}: line {number} has {len(cells)} fields, expected 12")
        try:
            rows.append((number, [float(c) for c in cells]))
        except ValueError:
            raise MissionFileError(f"{path}: line {number} holds a non-number") from None
    if not rows:
        raise MissionFileError(f"{path}: no home line")
    home = (rows[0][1][8], rows[0][1][9], rows[0][1][10])
    items = [
        _item(int(r[3]), int(r[2]), r[4:11], bool(r[11]), f"{path}: line {number}")
        for number, r in rows[1:]
    ]
    return home, items


# --- KML -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapturePoint:
    """Where a sortie takes a picture, and how the camera looks."""

    lon_deg: float
    lat_deg: float
    altitude_m: float  # above the launch point
    heading_deg: float  # compass heading of the camera (the drone's, along survey lines)
    gimbal_pitch_deg: float  # -90 = nadir


def capture_points(sortie: Sortie) -> list[CapturePoint]:
    """Every picture the sortie's mission takes, in flight order: along survey lines every
    trigger distance (nadir, facing along the line), and the single oblique shots of check
    visits (after the yaw and gimbal commands before them)."""
    crs = utm_crs_for(sortie.launch.lon_deg, sortie.launch.lat_deg)
    to_utm, to_wgs84 = transformer(WGS84, crs), transformer(crs, WGS84)
    points: list[CapturePoint] = []
    position: tuple[float, float] | None = None
    altitude = sortie.altitude_m
    trigger, heading, pitch = 0.0, 0.0, -90.0
    for item in sortie.items:
        if item.command is MavCmd.DO_SET_CAM_TRIGG_DIST:
            trigger = item.param1
        elif item.command is MavCmd.CONDITION_YAW:
            heading = item.param1
        elif item.command is MavCmd.DO_MOUNT_CONTROL:
            pitch = item.param1
        elif item.command is MavCmd.DO_DIGICAM_CONTROL and position is not None:
            lon, lat = to_wgs84.transform(*position)
            points.append(CapturePoint(float(lon), float(lat), altitude, heading, pitch))
        elif item.command is MavCmd.NAV_WAYPOINT:
            point = to_utm.transform(item.lon_deg, item.lat_deg)
            if trigger > 0 and position is not None:
                line = LineString([position, point])
                count = math.floor(line.length / trigger + 1e-6) + 1
                along = math.degrees(math.atan2(point[0] - position[0], point[1] - position[1]))
                for k in range(count):
                    centre = line.interpolate(k * trigger)
                    lon, lat = to_wgs84.transform(centre.x, centre.y)
                    points.append(
                        CapturePoint(float(lon), float(lat), item.altitude_m, along % 360.0, -90.0)
                    )
            position, altitude = point, item.altitude_m
    return points


def camera_footprints(sortie: Sortie, settings: SurveySettings) -> list[list[tuple[float, float]]]:
    """Lon/lat rings of the nadir frames the sortie's survey lines will take."""
    crs = utm_crs_for(sortie.launch.lon_deg, sortie.launch.lat_deg)
    to_utm, to_wgs84 = transformer(WGS84, crs), transformer(crs, WGS84)
    across, along = settings.camera.footprint_m(settings.altitude_m)
    rings = []
    for shot in capture_points(sortie):
        if shot.gimbal_pitch_deg != -90.0:
            continue
        x, y = to_utm.transform(shot.lon_deg, shot.lat_deg)
        frame = box(x - along / 2, y - across / 2, x + along / 2, y + across / 2)
        frame = affinity.rotate(frame, 90.0 - shot.heading_deg, origin=(x, y))
        xs, ys = np.asarray(frame.exterior.coords).T
        lon, lat = to_wgs84.transform(xs, ys)
        rings.append(list(zip(map(float, lon), map(float, lat), strict=True)))
    return rings


def _kml_polygon(ring: Sequence[tuple[float, float]]) -> str:
    coordinates = " ".join(f"{lon:.8f},{lat:.8f}" for lon, lat in ring)
    return (
        "<Polygon><outerBoundaryIs><LinearRing>"
        f"<coordinates>{coordinates}</coordinates>"
        "</LinearRing></outerBoundaryIs></Polygon>"
    )


def kml_document(plan: PatrolPlan, sorties: Sequence[Sortie] | None = None) -> str:
    """One KML document: a folder per sortie (default: all) with route and camera footprints."""
    folders = []
    for sortie in plan.sorties if sorties is None else sorties:
        route = [(sortie.launch.lon_deg, sortie.launch.lat_deg, 0.0)]
        route += [(i.lon_deg, i.lat_deg, i.altitude_m) for i in sortie.items if i.is_position]
        route.append((sortie.launch.lon_deg, sortie.launch.lat_deg, 0.0))
        coordinates = " ".join(f"{lon:.8f},{lat:.8f},{alt:.2f}" for lon, lat, alt in route)
        footprints = "".join(
            f"<Placemark><styleUrl>#footprint</styleUrl>{_kml_polygon(ring)}</Placemark>"
            for ring in camera_footprints(sortie, plan.settings)
        )
        sites = ", ".join(
            f"{v.site_id} ({v.part}/{v.parts})" if v.parts > 1 else v.site_id for v in sortie.visits
        )
        summary = (
            f"{sortie.duration_s / 60:.1f} min, {sortie.distance_m / 1000:.2f} km, "
            f"{sortie.expected_frames} frames: {sites}"
        )
        folders.append(
            f"<Folder><name>{escape(sortie.name)}</name>"
            f"<description>{escape(summary)}</description>"
            "<Placemark><name>route</name><styleUrl>#route</styleUrl><LineString>"
            "<altitudeMode>relativeToGround</altitudeMode>"
            f"<coordinates>{coordinates}</coordinates></LineString></Placemark>"
            f"<Folder><name>camera footprints</name>{footprints}</Folder></Folder>"
        )
    zones = "".join(
        "<Placemark><name>no-fly zone</name><styleUrl>#nofly</styleUrl>"
        f"{_kml_polygon(ring)}</Placemark>"
        for ring in plan.no_fly_zones
    )
    styles = (
        '<Style id="route"><LineStyle><color>ff00a5ff</color><width>3</width></LineStyle></Style>'
        '<Style id="footprint"><LineStyle><color>8000ff00</color></LineStyle>'
        "<PolyStyle><color>2000ff00</color></PolyStyle></Style>"
        '<Style id="nofly"><LineStyle><color>ff0000ff</color></LineStyle>'
        "<PolyStyle><color>400000ff</color></PolyStyle></Style>"
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="{KML_NAMESPACE}"><Document>'
        f"<name>dustpatrol patrol</name>{styles}{''.join(folders)}{zones}</Document></kml>\n"
    )


# --- DJI WPML .kmz -------------------------------------------------------------------------


def _mission_config(sortie: Sortie, cruise: float) -> str:
    return (
        "<wpml:missionConfig>"
        "<wpml:flyToWaylineMode>safely</wpml:flyToWaylineMode>"
        "<wpml:finishAction>goHome</wpml:finishAction>"
        "<wpml:exitOnRCLost>executeLostAction</wpml:exitOnRCLost>"
        "<wpml:executeRCLostAction>goBack</wpml:executeRCLostAction>"
        "<wpml:takeOffSecurityHeight>20</wpml:takeOffSecurityHeight>"
        f"<wpml:globalTransitionalSpeed>{cruise:g}</wpml:globalTransitionalSpeed>"
        f"<wpml:globalRTHHeight>{sortie.altitude_m:g}</wpml:globalRTHHeight>"
        f"<wpml:droneInfo><wpml:droneEnumValue>{DJI_M3E[0]}</wpml:droneEnumValue>"
        f"<wpml:droneSubEnumValue>{DJI_M3E[1]}</wpml:droneSubEnumValue></wpml:droneInfo>"
        f"<wpml:payloadInfo><wpml:payloadEnumValue>{DJI_M3E_CAMERA}</wpml:payloadEnumValue>"
        "<wpml:payloadSubEnumValue>0</wpml:payloadSubEnumValue>"
        "<wpml:payloadPositionIndex>0</wpml:payloadPositionIndex></wpml:payloadInfo>"
        "</wpml:missionConfig>"
    )


def _action(action_id: int, function: str, params: str) -> str:
    return (
        f"<wpml:action><wpml:actionId>{action_id}</wpml:actionId>"
        f"<wpml:actionActuatorFunc>{function}</wpml:actionActuatorFunc>"
        f"<wpml:actionActuatorFuncParam>{params}</wpml:actionActuatorFuncParam></wpml:action>"
    )


def _gimbal(action_id: int, pitch: float) -> str:
    return _action(
        action_id,
        "gimbalRotate",
        "<wpml:gimbalRotateMode>absoluteAngle</wpml:gimbalRotateMode>"
        "<wpml:gimbalPitchRotateEnable>1</wpml:gimbalPitchRotateEnable>"
        f"<wpml:gimbalPitchRotateAngle>{pitch:g}</wpml:gimbalPitchRotateAngle>"
        "<wpml:gimbalRollRotateEnable>0</wpml:gimbalRollRotateEnable>"
        "<wpml:gimbalRollRotateAngle>0</wpml:gimbalRollRotateAngle>"
        "<wpml:gimbalYawRotateEnable>0</wpml:gimbalYawRotateEnable>"
        "<wpml:gimbalYawRotateAngle>0</wpml:gimbalYawRotateAngle>"
        "<wpml:gimbalRotateTimeEnable>0</wpml:gimbalRotateTimeEnable>"
        "<wpml:gimbalRotateTime>0</wpml:gimbalRotateTime>"
        "<wpml:payloadPositionIndex>0</wpml:payloadPositionIndex>",
    )


def _group(group_id: int, start: int, end: int, trigger: str, actions: Sequence[str]) -> str:
    return (
        f"<wpml:actionGroup><wpml:actionGroupId>{group_id}</wpml:actionGroupId>"
        f"<wpml:actionGroupStartIndex>{start}</wpml:actionGroupStartIndex>"
        f"<wpml:actionGroupEndIndex>{end}</wpml:actionGroupEndIndex>"
        "<wpml:actionGroupMode>sequence</wpml:actionGroupMode>"
        f"<wpml:actionTrigger>{trigger}</wpml:actionTrigger>{''.join(actions)}</wpml:actionGroup>"
    )


NADIR_DEG = -90.0
PHOTO = "<wpml:payloadPositionIndex>0</wpml:payloadPositionIndex>"
REACH_POINT = "<wpml:actionTriggerType>reachPoint</wpml:actionTriggerType>"


@dataclass(slots=True)
class _WpmlPoint:
    """One waypoint of a DJI route: where, how high and fast, the gimbal, its actions."""

    lon_deg: float
    lat_deg: float
    height_m: float
    speed_m_s: float
    pitch_deg: float
    groups: list[str] = field(default_factory=list)


def _wpml_points(sortie: Sortie) -> tuple[list[_WpmlPoint], float]:
    """The sortie's positions as DJI waypoints with their action groups, and the cruise speed.

    A survey line starts with the gimbal turned to nadir at its first waypoint, then photos
    every trigger distance until its last (multipleDistance); a check shot turns the
    aircraft and the gimbal, then takes one photo (reachPoint)."""
    cruise = next((i.param2 for i in sortie.items if i.command is MavCmd.DO_CHANGE_SPEED), 10.0)
    points: list[_WpmlPoint] = []
    speed, pitch = cruise, NADIR_DEG
    trigger_from: tuple[int, float] | None = None
    group_id = 0
    pending_yaw: float | None = None
    pending_pitch: float | None = None
    for item in sortie.items:
        index = len(points) - 1
        if item.command is MavCmd.DO_CHANGE_SPEED:
            speed = item.param2
        elif item.command is MavCmd.NAV_WAYPOINT:
            points.append(_WpmlPoint(item.lon_deg, item.lat_deg, item.altitude_m, speed, pitch))
        elif item.command is MavCmd.DO_SET_CAM_TRIGG_DIST:
            if item.param1 > 0:
                trigger_from = (index, item.param1)
                pitch = NADIR_DEG
                group_id += 1
                points[index].pitch_deg = NADIR_DEG
                points[index].groups.append(
                    _group(group_id, index, index, REACH_POINT, [_gimbal(1, NADIR_DEG)])
                )
            elif trigger_from is not None:
                start, distance = trigger_from
                group_id += 1
                points[start].groups.append(
                    _group(
                        group_id,
                        start,
                        index,
                        "<wpml:actionTriggerType>multipleDistance</wpml:actionTriggerType>"
                        f"<wpml:actionTriggerParam>{distance:.2f}</wpml:actionTriggerParam>",
                        [_action(1, "takePhoto", PHOTO)],
                    )
                )
                trigger_from = None
        elif item.command is MavCmd.CONDITION_YAW:
            pending_yaw = item.param1
        elif item.command is MavCmd.DO_MOUNT_CONTROL:
            pending_pitch = item.param1
        elif item.command is MavCmd.DO_DIGICAM_CONTROL:
            group_id += 1
            yaw = ((pending_yaw or 0.0) + 180.0) % 360.0 - 180.0
            pitch = NADIR_DEG if pending_pitch is None else pending_pitch
            points[index].pitch_deg = pitch
            points[index].groups.append(
                _group(
                    group_id,
                    index,
                    index,
                    REACH_POINT,
                    [
                        _action(
                            1,
                            "rotateYaw",
                            f"<wpml:aircraftHeading>{yaw:.1f}</wpml:aircraftHeading>"
                            "<wpml:aircraftPathMode>counterClockwise</wpml:aircraftPathMode>",
                        ),
                        _gimbal(2, pitch),
                        _action(3, "takePhoto", PHOTO),
                    ],
                )
            )
            pending_yaw = pending_pitch = None
    return points, cruise


_HEADING = "<wpml:waypointHeadingMode>followWayline</wpml:waypointHeadingMode>"
_TURN_MODE = "toPointAndStopWithDiscontinuityCurvature"


def _waylines_placemark(index: int, point: _WpmlPoint) -> str:
    """A waypoint of waylines.wpml, the file the aircraft executes: everything explicit."""
    return (
        f"<Placemark><Point><coordinates>{point.lon_deg:.8f},{point.lat_deg:.8f}"
        f"</coordinates></Point><wpml:index>{index}</wpml:index>"
        f"<wpml:executeHeight>{point.height_m:g}</wpml:executeHeight>"
        f"<wpml:waypointSpeed>{point.speed_m_s:g}</wpml:waypointSpeed>"
        f"<wpml:waypointHeadingParam>{_HEADING}</wpml:waypointHeadingParam>"
        f"<wpml:waypointTurnParam><wpml:waypointTurnMode>{_TURN_MODE}</wpml:waypointTurnMode>"
        "<wpml:waypointTurnDampingDist>0</wpml:waypointTurnDampingDist></wpml:waypointTurnParam>"
        f"<wpml:useStraightLine>1</wpml:useStraightLine>{''.join(point.groups)}</Placemark>"
    )


def _template_placemark(index: int, point: _WpmlPoint, sortie: Sortie, cruise: float) -> str:
    """A waypoint of template.kml, the file DJI Pilot 2 edits: globals where they hold."""
    same_height = abs(point.height_m - sortie.altitude_m) < 1e-6
    same_speed = abs(point.speed_m_s - cruise) < 1e-6
    speed = "" if same_speed else f"<wpml:waypointSpeed>{point.speed_m_s:g}</wpml:waypointSpeed>"
    return (
        f"<Placemark><Point><coordinates>{point.lon_deg:.8f},{point.lat_deg:.8f}"
        f"</coordinates></Point><wpml:index>{index}</wpml:index>"
        # Heights relative to the take-off point: DJI's own relative routes repeat the height
        # as the ellipsoid height (the aircraft does not use it in this mode).
        f"<wpml:ellipsoidHeight>{point.height_m:g}</wpml:ellipsoidHeight>"
        f"<wpml:height>{point.height_m:g}</wpml:height>"
        f"<wpml:useGlobalHeight>{int(same_height)}</wpml:useGlobalHeight>"
        f"<wpml:useGlobalSpeed>{int(same_speed)}</wpml:useGlobalSpeed>{speed}"
        "<wpml:useGlobalHeadingParam>1</wpml:useGlobalHeadingParam>"
        "<wpml:useGlobalTurnParam>1</wpml:useGlobalTurnParam>"
        f"<wpml:gimbalPitchAngle>{point.pitch_deg:g}</wpml:gimbalPitchAngle>"
        f"<wpml:useStraightLine>1</wpml:useStraightLine>{''.join(point.groups)}</Placemark>"
    )


def wpml_kmz(sortie: Sortie) -> bytes:
    """A DJI Pilot 2 route file: a zip with ``wpmz/template.kml`` and ``wpmz/waylines.wpml``,
    laid out as DJI's published WPML samples (namespace 1.0.6, as Pilot 2 writes it)."""
    points, cruise = _wpml_points(sortie)
    header = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<kml xmlns="{KML_NAMESPACE}" xmlns:wpml="{WPML_NAMESPACE}">'
    )
    config = _mission_config(sortie, cruise)
    folder_head = (
        "<wpml:templateId>0</wpml:templateId>"
        "<wpml:executeHeightMode>relativeToStartPoint</wpml:executeHeightMode>"
        "<wpml:waylineId>0</wpml:waylineId>"
        f"<wpml:distance>{sortie.distance_m:.1f}</wpml:distance>"
        f"<wpml:duration>{sortie.duration_s:.1f}</wpml:duration>"
        f"<wpml:autoFlightSpeed>{cruise:g}</wpml:autoFlightSpeed>"
    )
    waylines = (
        f"{header}<Document>{config}<Folder>{folder_head}"
        + "".join(_waylines_placemark(i, p) for i, p in enumerate(points))
        + "</Folder></Document></kml>\n"
    )
    template_globals = (
        "<wpml:templateType>waypoint</wpml:templateType>"
        "<wpml:templateId>0</wpml:templateId>"
        "<wpml:waylineCoordinateSysParam><wpml:coordinateMode>WGS84</wpml:coordinateMode>"
        "<wpml:heightMode>relativeToStartPoint</wpml:heightMode>"
        "<wpml:positioningType>GPS</wpml:positioningType></wpml:waylineCoordinateSysParam>"
        f"<wpml:autoFlightSpeed>{cruise:g}</wpml:autoFlightSpeed>"
        f"<wpml:globalHeight>{sortie.altitude_m:g}</wpml:globalHeight>"
        "<wpml:caliFlightEnable>0</wpml:caliFlightEnable>"
        "<wpml:gimbalPitchMode>usePointSetting</wpml:gimbalPitchMode>"
        f"<wpml:globalWaypointHeadingParam>{_HEADING}"
        "<wpml:waypointHeadingAngle>0</wpml:waypointHeadingAngle>"
        "<wpml:waypointPoiPoint>0.000000,0.000000,0.000000</wpml:waypointPoiPoint>"
        "<wpml:waypointHeadingPathMode>followBadArc</wpml:waypointHeadingPathMode>"
        "</wpml:globalWaypointHeadingParam>"
        f"<wpml:globalWaypointTurnMode>{_TURN_MODE}</wpml:globalWaypointTurnMode>"
        "<wpml:globalUseStraightLine>1</wpml:globalUseStraightLine>"
    )
    payload = (
        "<wpml:payloadParam><wpml:payloadPositionIndex>0</wpml:payloadPositionIndex>"
        "<wpml:meteringMode>average</wpml:meteringMode>"
        "<wpml:dewarpingEnable>0</wpml:dewarpingEnable>"
        "<wpml:imageFormat>wide</wpml:imageFormat></wpml:payloadParam>"
    )
    template = (
        f"{header}<Document><wpml:author>dustpatrol</wpml:author>"
        "<wpml:createTime>0</wpml:createTime><wpml:updateTime>0</wpml:updateTime>"
        f"{config}<Folder>{template_globals}"
        + "".join(_template_placemark(i, p, sortie, cruise) for i, p in enumerate(points))
        + f"{payload}</Folder></Document></kml>\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("wpmz/template.kml", template), ("wpmz/waylines.wpml", waylines)):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


# --- writing a whole plan ------------------------------------------------------------------


def write_plan_files(plan: PatrolPlan, folder: Path) -> list[Path]:
    """Every format, one file per sortie, plus ``patrol.kml`` for the whole plan."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sortie in plan.sorties:
        outputs = {
            f"{sortie.name}.plan": json.dumps(qgc_plan(sortie, plan), indent=2).encode("utf-8"),
            f"{sortie.name}.waypoints": waypoints_text(sortie).encode("utf-8"),
            f"{sortie.name}.kmz": wpml_kmz(sortie),
            f"{sortie.name}.kml": kml_document(plan, [sortie]).encode("utf-8"),
        }
        for name, data in outputs.items():
            path = folder / name
            path.write_bytes(data)
            written.append(path)
    kml = folder / "patrol.kml"
    kml.write_text(kml_document(plan), encoding="utf-8")
    written.append(kml)
    return written
