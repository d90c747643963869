"""Per-site flight patterns: lawnmower survey grids and oblique check shots (projected CRS).

A survey grid runs along the long side of the site's minimum rotated rectangle. With the
camera's long side across track, line spacing is the footprint width times (1 - side
overlap) and the trigger distance the footprint length times (1 - front overlap); enough
lines are flown that the outer swaths reach past the site's edges, and each line carries
frames from one edge of the site to the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from missions.model import PlanningError, SurveySettings, heading_deg

EDGE_MARGIN_M = 1.0
CHECK_SHOTS = 4


@dataclass(frozen=True, slots=True)
class Leg:
    """A straight piece of a pattern in projected metres; ``trigger_m`` > 0 takes frames."""

    start: tuple[float, float]
    end: tuple[float, float]
    trigger_m: float = 0.0
    frames: int = 0
    heading_deg: float | None = None  # for check shots: camera heading
    gimbal_pitch_deg: float = -90.0

    @property
    def length_m(self) -> float:
        return math.dist(self.start, self.end)


@dataclass(frozen=True, slots=True)
class SitePattern:
    """What to fly over one site: legs in order, with the planned coverage."""

    site_id: str
    legs: tuple[Leg, ...]
    expected_frames: int
    coverage_ratio: float
    line_spacing_m: float
    trigger_distance_m: float

    @property
    def entry(self) -> tuple[float, float]:
        return self.legs[0].start

    @property
    def exit(self) -> tuple[float, float]:
        return self.legs[-1].end


def _long_axis_angle(polygon: BaseGeometry) -> float:
    """Angle (degrees, counter-clockwise from east) of the minimum rectangle's long side."""
    rectangle = shapely.oriented_envelope(polygon)
    coords = np.asarray(rectangle.exterior.coords) if isinstance(rectangle, Polygon) else None
    if coords is None or len(coords) < 4:
        return 0.0
    edges = np.diff(coords[:3], axis=0)
    longest = edges[int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))]
    return math.degrees(math.atan2(longest[1], longest[0]))


def survey_pattern(
    site_id: str,
    polygon: Polygon | MultiPolygon,
    settings: SurveySettings,
    no_fly: BaseGeometry | None = None,
) -> SitePattern:
    """A lawnmower grid over ``polygon`` (projected metres) avoiding ``no_fly``."""
    if polygon.is_empty or polygon.area <= 0:
        raise PlanningError(f"site {site_id}: empty geometry, nothing to survey")
    across, along = settings.camera.footprint_m(settings.altitude_m)
    spacing, trigger = settings.line_spacing_m, settings.trigger_distance_m
    angle = _long_axis_angle(polygon)
    origin = polygon.centroid
    local = affinity.rotate(polygon, -angle, origin=origin)
    min_x, min_y, max_x, max_y = local.bounds
    height = max_y - min_y
    n_lines = max(1, math.ceil(max(height - across + 2 * EDGE_MARGIN_M, 0.0) / spacing) + 1)
    offsets = (np.arange(n_lines) - (n_lines - 1) / 2.0) * spacing + (min_y + max_y) / 2.0
    blocked = affinity.rotate(no_fly, -angle, origin=origin) if no_fly is not None else None
    legs_local: list[tuple[tuple[float, float], tuple[float, float], int]] = []
    frame_centres: list[tuple[float, float]] = []
    for k, y in enumerate(offsets):
        swath = box(min_x - 1.0, y - across / 2.0, max_x + 1.0, y + across / 2.0).intersection(
            local
        )
        if swath.is_empty:
            continue
        x0, _, x1, _ = swath.bounds
        frames = max(1, math.ceil((x1 - x0) / trigger) + 1)
        start_x = (x0 + x1) / 2.0 - (frames - 1) * trigger / 2.0
        pieces = _free_pieces(
            LineString([(start_x, y), (start_x + (frames - 1) * trigger, y)]),
            blocked,
            frames,
            trigger,
        )
        if k % 2 == 1:  # boustrophedon: every other line flown backwards
            pieces = [(b, a, n) for a, b, n in reversed(pieces)]
        legs_local.extend(pieces)
        for a, b, n in pieces:
            xs = np.linspace(a[0], b[0], n) if n > 1 else np.array([a[0]])
            frame_centres.extend((float(x), y) for x in xs)
    if not legs_local:
        raise PlanningError(f"site {site_id}: every survey line lies inside a no-fly zone")
    footprints = shapely.box(
        *np.array(
            [
                (x - along / 2, y - across / 2, x + along / 2, y + across / 2)
                for x, y in frame_centres
            ]
        ).T
    )
    seen = shapely.union_all(footprints).intersection(local)
    coverage = float(seen.area / local.area)
    legs = tuple(
        Leg(_to_world(a, angle, origin), _to_world(b, angle, origin), trigger, n)
        for a, b, n in legs_local
    )
    return SitePattern(site_id, legs, len(frame_centres), coverage, spacing, trigger)


def _free_pieces(
    line: LineString, blocked: BaseGeometry | None, frames: int, trigger: float
) -> list[tuple[tuple[float, float], tuple[float, float], int]]:
    """The parts of a survey line outside ``blocked``, each with its whole frames."""
    (x0, y), (x1, _) = line.coords
    if blocked is None or not line.intersects(blocked):
        return [((x0, y), (x1, y), frames)]
    free = line.difference(blocked.buffer(EDGE_MARGIN_M))
    pieces = []
    for part in getattr(free, "geoms", [free]):
        if part.is_empty or part.length < trigger / 2:
            continue
        (a, _), (b, _) = part.coords[0], part.coords[-1]
        a, b = min(a, b), max(a, b)
        n = max(1, math.floor((b - a) / trigger) + 1)
        pieces.append(((a, y), (a + (n - 1) * trigger, y), n))
    return pieces


def _to_world(point: tuple[float, float], angle: float, origin: Point) -> tuple[float, float]:
    rotated = affinity.rotate(Point(point), angle, origin=origin)
    return (rotated.x, rotated.y)


def check_pattern(
    site_id: str,
    polygon: Polygon | MultiPolygon,
    settings: SurveySettings,
    no_fly: BaseGeometry | None = None,
) -> SitePattern:
    """Oblique shots from four sides of the site, each looking at its centre."""
    if polygon.is_empty:
        raise PlanningError(f"site {site_id}: empty geometry, nothing to check")
    centre = polygon.centroid
    back = settings.altitude_m / math.tan(math.radians(-settings.check_pitch_deg))
    angle = _long_axis_angle(polygon)
    legs = []
    for k in range(CHECK_SHOTS):
        bearing = math.radians(angle + 90.0 * k)
        position = (centre.x + back * math.cos(bearing), centre.y + back * math.sin(bearing))
        if no_fly is not None and no_fly.buffer(EDGE_MARGIN_M).contains(Point(position)):
            continue
        heading = heading_deg(position, (centre.x, centre.y))
        legs.append(Leg(position, position, 0.0, 1, heading, settings.check_pitch_deg))
    if not legs:
        raise PlanningError(f"site {site_id}: every check position lies inside a no-fly zone")
    # A rough coverage: each oblique frame sees about a footprint-sized area around the centre.
    across, along = settings.camera.footprint_m(settings.altitude_m)
    seen = centre.buffer(min(across, along) / 2.0).intersection(polygon).area
    return SitePattern(site_id, tuple(legs), len(legs), float(seen / polygon.area), 0.0, 0.0)
