"""The data of a patrol plan: drones, cameras, survey settings, mission items and sorties.

Positions in mission items are WGS84 degrees; altitudes are metres above the launch point
(MAV_FRAME_GLOBAL_RELATIVE_ALT_INT), as ArduPilot and DJI relative-height missions use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from missions.errors import MissionError

MAX_ALTITUDE_M = 120.0  # China's cap for light drones in ordinary airspace


class PlanningError(MissionError):
    """Inputs to planning are missing, inconsistent or impossible to fly."""


class MavCmd(IntEnum):
    """MAVLink commands a patrol uses (values from the MAVLink common message set)."""

    NAV_WAYPOINT = 16
    NAV_RETURN_TO_LAUNCH = 20
    NAV_TAKEOFF = 22
    CONDITION_YAW = 115
    DO_CHANGE_SPEED = 178
    DO_DIGICAM_CONTROL = 203
    DO_MOUNT_CONTROL = 205
    DO_SET_CAM_TRIGG_DIST = 206


class MavFrame(IntEnum):
    GLOBAL = 0
    MISSION = 2
    GLOBAL_RELATIVE_ALT = 3
    GLOBAL_RELATIVE_ALT_INT = 6


class SiteMode(StrEnum):
    SURVEY = "survey"  # lawnmower grid, nadir, overlapping frames
    CHECK = "check"  # a few oblique shots around the site, for quick re-inspection


@dataclass(frozen=True, slots=True)
class DroneProfile:
    """What one drone of the fleet can do."""

    name: str = "M3E"
    cruise_speed_m_s: float = 12.0
    survey_speed_m_s: float = 8.0
    climb_speed_m_s: float = 5.0
    descent_speed_m_s: float = 3.0
    flight_time_s: float = 40 * 60.0  # with a fresh battery, still air
    reserve_fraction: float = 0.25  # kept for wind, holding and landing

    def __post_init__(self) -> None:
        for name in (
            "cruise_speed_m_s",
            "survey_speed_m_s",
            "climb_speed_m_s",
            "descent_speed_m_s",
            "flight_time_s",
        ):
            if not getattr(self, name) > 0:
                raise PlanningError(f"drone {self.name}: {name} must be positive")
        if not 0.0 <= self.reserve_fraction < 0.9:
            raise PlanningError(f"drone {self.name}: reserve_fraction must be within 0..0.9")

    @property
    def usable_time_s(self) -> float:
        """Flight time a sortie may plan for: the battery less the reserve."""
        return self.flight_time_s * (1.0 - self.reserve_fraction)


@dataclass(frozen=True, slots=True)
class SurveyCamera:
    """The survey camera: image size and focal length in pixels."""

    name: str = "m3e"
    width_px: int = 5280
    height_px: int = 3956
    focal_px: float = 3713.29

    def footprint_m(self, altitude_m: float) -> tuple[float, float]:
        """(across-track, along-track) ground size of a nadir frame; the long side is across."""
        gsd = altitude_m / self.focal_px
        return self.width_px * gsd, self.height_px * gsd


CAMERAS = {
    "m3e": SurveyCamera("m3e", 5280, 3956, 3713.29),
    "m30_wide": SurveyCamera("m30_wide", 4000, 3000, 2812.5),
}


@dataclass(frozen=True, slots=True)
class SurveySettings:
    camera: SurveyCamera = field(default_factory=SurveyCamera)
    altitude_m: float = 100.0
    front_overlap: float = 0.75
    side_overlap: float = 0.65
    check_pitch_deg: float = -45.0  # gimbal pitch of the oblique shots in check mode

    def __post_init__(self) -> None:
        if not 10.0 <= self.altitude_m <= MAX_ALTITUDE_M:
            raise PlanningError(
                f"altitude {self.altitude_m} m is outside 10..{MAX_ALTITUDE_M:.0f} m (legal cap)"
            )
        for name in ("front_overlap", "side_overlap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.95:
                raise PlanningError(f"{name} {value} must be within 0..0.95")
        if not -90.0 <= self.check_pitch_deg < -5.0:
            raise PlanningError("check_pitch_deg must be within -90..-5 degrees")

    @property
    def line_spacing_m(self) -> float:
        return self.camera.footprint_m(self.altitude_m)[0] * (1.0 - self.side_overlap)

    @property
    def trigger_distance_m(self) -> float:
        return self.camera.footprint_m(self.altitude_m)[1] * (1.0 - self.front_overlap)


@dataclass(frozen=True, slots=True)
class MissionItem:
    """One MAVLink mission item (MISSION_ITEM_INT semantics, positions in degrees)."""

    command: MavCmd
    frame: MavFrame = MavFrame.GLOBAL_RELATIVE_ALT_INT
    param1: float = 0.0
    param2: float = 0.0
    param3: float = 0.0
    param4: float = 0.0
    lat_deg: float = 0.0
    lon_deg: float = 0.0
    altitude_m: float = 0.0
    autocontinue: bool = True

    @property
    def is_position(self) -> bool:
        return self.command in (MavCmd.NAV_WAYPOINT, MavCmd.NAV_TAKEOFF)


@dataclass(frozen=True, slots=True)
class LaunchPoint:
    lat_deg: float
    lon_deg: float
    amsl_m: float | None = None  # ground height above mean sea level, when known

    def __post_init__(self) -> None:
        if not (-90 <= self.lat_deg <= 90 and -180 <= self.lon_deg <= 180):
            raise PlanningError(f"launch point ({self.lat_deg}, {self.lon_deg}) is not a lat/lon")
        if self.amsl_m is not None and not -500.0 <= self.amsl_m <= 9000.0:
            raise PlanningError(f"launch altitude {self.amsl_m} m is not a ground height AMSL")

    @classmethod
    def parse(cls, text: str) -> LaunchPoint:
        """``"36.48,115.45"`` (latitude first, as people write it), optionally with the ground
        height above mean sea level: ``"36.48,115.45,42.5"``."""
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (2, 3):
            raise PlanningError(
                f"launch point {text!r} must be LAT,LON or LAT,LON,ALT (degrees, metres AMSL)"
            )
        return cls(values[0], values[1], values[2] if len(values) == 3 else None)


@dataclass(frozen=True, slots=True)
class SiteVisit:
    """What a sortie does at one site (or one part of a site split across sorties)."""

    site_id: str
    mode: SiteMode
    part: int  # 1-based part number when a site is split across sorties
    parts: int
    expected_frames: int
    work_time_s: float


@dataclass(frozen=True, slots=True)
class Sortie:
    """One battery's flight: take off at ``launch``, visit sites, return."""

    drone: str
    number: int
    launch: LaunchPoint
    altitude_m: float
    items: tuple[MissionItem, ...]
    visits: tuple[SiteVisit, ...]
    distance_m: float
    duration_s: float
    battery_fraction: float  # of the full battery, reserve excluded from the budget
    expected_frames: int

    @property
    def name(self) -> str:
        return f"{self.drone}-sortie{self.number:02d}"


@dataclass(frozen=True, slots=True)
class DroppedSite:
    site_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PatrolPlan:
    sorties: tuple[Sortie, ...]
    dropped: tuple[DroppedSite, ...]
    coverage: dict[str, float]  # site id -> planned share of the site seen (0..1)
    no_fly_zones: tuple[tuple[tuple[float, float], ...], ...]  # lon/lat rings, for geofences
    settings: SurveySettings

    @property
    def total_duration_s(self) -> float:
        return sum(s.duration_s for s in self.sorties)

    @property
    def expected_frames(self) -> int:
        return sum(s.expected_frames for s in self.sorties)


def heading_deg(from_xy: tuple[float, float], to_xy: tuple[float, float]) -> float:
    """Compass heading (clockwise from north) from one projected point to another."""
    return math.degrees(math.atan2(to_xy[0] - from_xy[0], to_xy[1] - from_xy[1])) % 360.0


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres between two (lat, lon) points up to tens of km apart (equirectangular: within
    0.1 % at that range, plenty for sanity limits)."""
    north = (b[0] - a[0]) * 111_320.0
    east = (b[1] - a[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(east, north)


def check_positions(
    items: Sequence[MissionItem], home: tuple[float, float], max_distance_m: float, what: str
) -> None:
    """Refuse a mission with a position at (0, 0) (an unread or unset coordinate) or farther
    than ``max_distance_m`` from ``home`` (lat, lon)."""
    for number, item in enumerate(items, start=1):
        if not item.is_position:
            continue
        if not all(math.isfinite(v) for v in (item.lat_deg, item.lon_deg, item.altitude_m)):
            raise MissionError(
                f"mission item {number} ({item.command.name}) has no position "
                f"({item.lat_deg}, {item.lon_deg}, {item.altitude_m} m); check the plan file"
            )
        if item.lat_deg == 0.0 and item.lon_deg == 0.0:
            if item.command is MavCmd.NAV_TAKEOFF:
                continue  # a take-off at (0, 0) means "where the vehicle stands"
            raise MissionError(
                f"mission item {number} ({item.command.name}) is at latitude 0, longitude 0: "
                "its position was not read or never set; check the plan file"
            )
        away = distance_m(home, (item.lat_deg, item.lon_deg))
        if away > max_distance_m:
            raise MissionError(
                f"mission item {number} ({item.command.name}) is {away / 1000:,.1f} km from "
                f"{what}, more than {max_distance_m / 1000:.1f} km: not this site's plan?"
            )
