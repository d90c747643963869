"""Georeferencing: casting image pixels onto flat ground in the frame's UTM zone.

Conventions: pixel (0, 0) is the centre of the top-left pixel, u right, v down. Camera angles
follow DJI's gimbal convention: yaw clockwise from north, pitch 0 at the horizon and -90 at
nadir, roll about the optical axis (rotation order yaw, pitch, roll). The ground is a plane at
``ground_height_m`` above the take-off point (the reference of DJI's RelativeAltitude).

Uncertainty model (documented here, used for matching tolerances). Each error source is
propagated to first order through the actual projection: the ground point is recomputed with
the camera yaw, pitch and roll each moved by one standard deviation and with the height moved
by one vertical standard deviation; each displacement vector ``j`` adds ``j·jᵀ`` to the 2x2
covariance, and the horizontal position adds ``σp²·I`` (RTK standard deviation per axis). With
``σ = sqrt(trace / 2)`` (the circular-normal equivalent), a point's uncertainty is the 95 %
radius ``2.4477·σ``; its median error is ``1.1774·σ``. At 100 m, nadir, RTK fixed and 0.5° yaw
noise, the corner of a 20 MP frame gets ~1.6 m (95 %): matching needs that tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from numpy.typing import NDArray
from pyproj import CRS
from shapely.geometry import Polygon

from geo.crs import WGS84, transformer, utm_crs_for
from geo.errors import GeoError
from geo.frames import FrameMeta

FloatArray = NDArray[np.float64]
RADIUS_95_PER_SIGMA = 2.4477
MEDIAN_PER_SIGMA = 1.1774
DEFAULT_MAX_RANGE_M = 2000.0


class GeorefError(GeoError):
    """A pixel or frame cannot be placed on the ground."""


@dataclass(frozen=True, slots=True)
class CameraIntrinsics:
    """A pinhole camera with optional OpenCV distortion (k1, k2, p1, p2[, k3])."""

    width_px: int
    height_px: int
    focal_px: float
    cx_px: float
    cy_px: float
    distortion: tuple[float, ...] = ()

    @property
    def matrix(self) -> FloatArray:
        return np.array(
            [[self.focal_px, 0.0, self.cx_px], [0.0, self.focal_px, self.cy_px], [0.0, 0.0, 1.0]]
        )


# Named presets by EXIF model, for frames without calibrated XMP intrinsics:
# (full width px, full height px, focal px at full resolution).
CAMERA_PRESETS: dict[str, tuple[int, int, float]] = {
    "M3E": (5280, 3956, 3713.29),
    "M30": (4000, 3000, 2812.5),
    "FC6310R": (5472, 3648, 3666.67),  # Phantom 4 RTK
}


def intrinsics_from_meta(meta: FrameMeta) -> CameraIntrinsics:
    """Intrinsics from calibrated XMP values, else a preset by model, else the 35 mm focal."""
    width, height = meta.width_px, meta.height_px
    if meta.calibrated_focal_px is not None:
        cx = meta.optical_center_x_px if meta.optical_center_x_px is not None else (width - 1) / 2
        cy = meta.optical_center_y_px if meta.optical_center_y_px is not None else (height - 1) / 2
        return CameraIntrinsics(width, height, meta.calibrated_focal_px, cx, cy, meta.distortion)
    if meta.model and meta.model.upper() in CAMERA_PRESETS:
        full_w, _, full_focal = CAMERA_PRESETS[meta.model.upper()]
        scale = width / full_w
        return CameraIntrinsics(
            width, height, full_focal * scale, (width - 1) / 2, (height - 1) / 2
        )
    if meta.focal_length_35mm:
        diagonal_px = math.hypot(width, height)
        focal = meta.focal_length_35mm * diagonal_px / math.hypot(36.0, 24.0)
        return CameraIntrinsics(width, height, focal, (width - 1) / 2, (height - 1) / 2)
    raise GeorefError(
        f"{meta.source}: no focal length in pixels: drone-dji:CalibratedFocalLength, a known "
        f"camera model ({', '.join(CAMERA_PRESETS)}) or EXIF FocalLengthIn35mmFilm is needed"
    )


@dataclass(frozen=True, slots=True)
class CameraPose:
    """A camera in a projected CRS: centre (east, north), height above the take-off point."""

    crs: CRS
    east_m: float
    north_m: float
    height_m: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    horizontal_std_m: float = 0.0
    vertical_std_m: float = 0.0
    yaw_std_deg: float = 0.0
    tilt_std_deg: float = 0.0
    rotation: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.crs.is_projected:
            raise GeorefError(f"camera pose CRS must be projected (metres), got {self.crs.name}")
        object.__setattr__(self, "rotation", _rotation(self.yaw_deg, self.pitch_deg, self.roll_deg))


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> FloatArray:
    """ENU vectors of the camera's x (image right), y (image down) and z (optical axis)."""
    yaw, pitch, roll = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    forward = np.array(
        [math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)]
    )
    level_right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    level_down = np.cross(forward, level_right)
    right = level_right * math.cos(roll) + level_down * math.sin(roll)
    down = level_down * math.cos(roll) - level_right * math.sin(roll)
    return np.column_stack([right, down, forward])


def pose_from_meta(
    meta: FrameMeta,
    *,
    yaw_std_deg: float = 0.5,
    tilt_std_deg: float = 0.2,
    crs: CRS | None = None,
) -> CameraPose:
    """The camera pose a frame's metadata states, in ``crs`` (default: its UTM zone)."""
    if meta.relative_altitude_m is None:
        raise GeorefError(
            f"{meta.source}: lacks drone-dji:RelativeAltitude, so its height above the ground is "
            "unknown; frames without it cannot be georeferenced on flat ground"
        )
    # What the frame states is used: the gimbal's angles; the flight's heading where the
    # gimbal states no yaw (it follows the aircraft); nadir only where no pitch is stated.
    yaw = meta.gimbal_yaw_deg if meta.gimbal_yaw_deg is not None else meta.flight_yaw_deg
    if yaw is None:
        if meta.gimbal_pitch_deg is not None:
            raise GeorefError(
                f"{meta.source}: states a gimbal pitch of {meta.gimbal_pitch_deg:g}° but no yaw "
                "(neither drone-dji:GimbalYawDegree nor FlightYawDegree); where the camera "
                "looks is unknown"
            )
        raise GeorefError(
            f"{meta.source}: lacks drone-dji:GimbalYawDegree/GimbalPitchDegree and "
            "FlightYawDegree; the camera's orientation is unknown"
        )
    pitch = meta.gimbal_pitch_deg if meta.gimbal_pitch_deg is not None else -90.0
    roll = meta.gimbal_roll_deg or 0.0
    target = crs or utm_crs_for(meta.lon_deg, meta.lat_deg)
    east, north = transformer(WGS84, target).transform(meta.lon_deg, meta.lat_deg)
    return CameraPose(
        crs=target,
        east_m=float(east),
        north_m=float(north),
        height_m=meta.relative_altitude_m,
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        horizontal_std_m=meta.horizontal_std_m,
        vertical_std_m=meta.vertical_std_m,
        yaw_std_deg=yaw_std_deg,
        tilt_std_deg=tilt_std_deg,
    )


@dataclass(frozen=True, slots=True)
class GroundPoints:
    """Ground positions (N, 2) in ``crs`` with a 95 % uncertainty radius (N,) in metres."""

    crs: CRS
    points: FloatArray
    uncertainty_m: FloatArray


def undistort_pixels(
    pixels: FloatArray, matrix: FloatArray, distortion: tuple[float, ...]
) -> FloatArray:
    """Pixels (N, 2) of a frame with Brown distortion (k1, k2, p1, p2[, k3]) moved to where
    the ideal pinhole camera with the same ``matrix`` sees them."""
    points = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    if not any(distortion) or not len(points):
        return points
    # OpenCV's default 5 iterations leave pixels of error in the corners of a wide lens.
    undistorted = cv2.undistortPoints(
        points.reshape(-1, 1, 2),
        matrix,
        np.asarray(distortion, dtype=np.float64),
        P=matrix,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12),
    )
    return np.asarray(undistorted, dtype=np.float64).reshape(-1, 2)


def _rays(points_px: FloatArray, camera: CameraIntrinsics, pose: CameraPose) -> FloatArray:
    pixels = undistort_pixels(points_px, camera.matrix, camera.distortion)
    normalised = np.column_stack(
        [
            (pixels[:, 0] - camera.cx_px) / camera.focal_px,
            (pixels[:, 1] - camera.cy_px) / camera.focal_px,
            np.ones(len(pixels)),
        ]
    )
    return np.asarray(normalised @ pose.rotation.T, dtype=np.float64)


def pixel_to_ground(
    points_px: FloatArray,
    camera: CameraIntrinsics,
    pose: CameraPose,
    ground_height_m: float = 0.0,
) -> GroundPoints:
    """Cast pixels (N, 2) onto the ground plane; rays at or above the horizon are refused."""
    rays = _rays(points_px, camera, pose)
    drop = pose.height_m - ground_height_m
    if drop <= 0.0:
        raise GeorefError(
            f"camera height {pose.height_m} m is not above the ground plane at {ground_height_m} m"
        )
    upward = rays[:, 2] >= -1e-9
    if np.any(upward):
        raise GeorefError(
            f"{int(upward.sum())} of {len(rays)} pixels look at or above the horizon and never "
            "reach the ground"
        )
    t = drop / -rays[:, 2]
    offsets = rays[:, :2] * t[:, None]
    points = np.column_stack([pose.east_m + offsets[:, 0], pose.north_m + offsets[:, 1]])
    uncertainty = _uncertainty(
        np.asarray(points_px, dtype=np.float64).reshape(-1, 2), offsets, camera, pose, drop
    )
    return GroundPoints(pose.crs, points, uncertainty)


def _cast(
    points_px: FloatArray, camera: CameraIntrinsics, pose: CameraPose, drop: float
) -> FloatArray:
    """Horizontal offsets from the camera of the ground points seen at ``points_px``."""
    rays = _rays(points_px, camera, pose)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays[:, 2] < -1e-9, drop / -rays[:, 2], np.nan)
    return np.asarray(rays[:, :2] * t[:, None], dtype=np.float64)


def _uncertainty(
    points_px: FloatArray,
    offsets: FloatArray,
    camera: CameraIntrinsics,
    pose: CameraPose,
    drop: float,
) -> FloatArray:
    """95 % radius of each ground point's error (see the module docstring)."""
    trace = np.full(len(offsets), 2.0 * pose.horizontal_std_m**2)
    moved_poses = [
        replace(pose, yaw_deg=pose.yaw_deg + pose.yaw_std_deg),
        replace(pose, pitch_deg=pose.pitch_deg + pose.tilt_std_deg),
        replace(pose, roll_deg=pose.roll_deg + pose.tilt_std_deg),
    ]
    for moved in moved_poses:
        shift = _cast(points_px, camera, moved, drop) - offsets
        trace += np.nan_to_num((shift**2).sum(axis=1), nan=np.inf)
    higher = offsets * ((drop + pose.vertical_std_m) / drop)
    trace += ((higher - offsets) ** 2).sum(axis=1)
    return np.asarray(RADIUS_95_PER_SIGMA * np.sqrt(trace / 2.0), dtype=np.float64)


def ground_to_pixel(
    points: FloatArray,
    camera: CameraIntrinsics,
    pose: CameraPose,
    ground_height_m: float = 0.0,
) -> FloatArray:
    """Where ground points (N, 2) in the pose's CRS appear in the frame: pixels (N, 2) with the
    lens distortion applied (the inverse of `pixel_to_ground`); NaN for points behind the
    camera. Pixels may lie outside the frame: clip them to it if needed."""
    ground = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    offsets = np.column_stack(
        [
            ground[:, 0] - pose.east_m,
            ground[:, 1] - pose.north_m,
            np.full(len(ground), ground_height_m - pose.height_m),
        ]
    )
    in_camera = offsets @ pose.rotation  # camera axes: right, down, optical axis
    depth = in_camera[:, 2]
    ahead = depth > 1e-9
    normalised = np.full((len(ground), 2), np.nan)
    normalised[ahead] = in_camera[ahead, :2] / depth[ahead, None]
    pixels = np.full((len(ground), 2), np.nan)
    if np.any(ahead):
        rays = np.column_stack([normalised[ahead], np.ones(int(ahead.sum()))])
        projected, _ = cv2.projectPoints(
            rays.reshape(-1, 1, 3),
            np.zeros(3),
            np.zeros(3),
            camera.matrix,
            np.asarray(camera.distortion or (0.0, 0.0, 0.0, 0.0), dtype=np.float64),
        )
        pixels[ahead] = projected.reshape(-1, 2)
    return pixels


@dataclass(frozen=True, slots=True)
class GroundPolygon:
    """A mask outline placed on the ground: polygon in ``crs`` and its 95 % uncertainty."""

    crs: CRS
    polygon: Polygon
    uncertainty_m: float


def georeference_polygon(
    exterior_px: FloatArray,
    camera: CameraIntrinsics,
    pose: CameraPose,
    ground_height_m: float = 0.0,
    holes_px: list[FloatArray] | None = None,
) -> GroundPolygon:
    """A pixel polygon (exterior (N, 2), optional holes) as a ground polygon.

    Straight pixel edges stay straight on a flat ground (a homography), so casting the
    vertices is exact. The uncertainty is the largest of the vertices'.
    """
    exterior = np.asarray(exterior_px, dtype=np.float64).reshape(-1, 2)
    if len(exterior) < 3:
        raise GeorefError(f"a polygon needs at least 3 vertices, got {len(exterior)}")
    shell = pixel_to_ground(exterior, camera, pose, ground_height_m)
    holes = [pixel_to_ground(h, camera, pose, ground_height_m) for h in holes_px or []]
    polygon = Polygon(shell.points, [h.points for h in holes])
    worst = max([float(shell.uncertainty_m.max())] + [float(h.uncertainty_m.max()) for h in holes])
    return GroundPolygon(pose.crs, polygon, worst)


def footprint(
    camera: CameraIntrinsics,
    pose: CameraPose,
    ground_height_m: float = 0.0,
    max_range_m: float = DEFAULT_MAX_RANGE_M,
    samples_per_side: int = 16,
) -> Polygon:
    """The ground the image covers, in the pose's CRS. Rays that miss the ground (oblique
    frames showing sky) or land beyond ``max_range_m`` are cut at that range."""
    w, h = camera.width_px - 1.0, camera.height_px - 1.0
    s = np.linspace(0.0, 1.0, samples_per_side, endpoint=False)
    border = np.concatenate(
        [
            np.column_stack([s * w, np.zeros_like(s)]),
            np.column_stack([np.full_like(s, w), s * h]),
            np.column_stack([w - s * w, np.full_like(s, h)]),
            np.column_stack([np.zeros_like(s), h - s * h]),
        ]
    )
    rays = _rays(border, camera, pose)
    drop = pose.height_m - ground_height_m
    if drop <= 0.0:
        raise GeorefError("camera is not above the ground plane")
    points = []
    for ray in rays:
        horizontal = math.hypot(ray[0], ray[1])
        if ray[2] < -1e-9:
            t = drop / -ray[2]
            if horizontal * t <= max_range_m:
                points.append((pose.east_m + ray[0] * t, pose.north_m + ray[1] * t))
                continue
        if horizontal < 1e-12:
            continue
        scale = max_range_m / horizontal
        points.append((pose.east_m + ray[0] * scale, pose.north_m + ray[1] * scale))
    polygon = Polygon(points)
    if not polygon.is_valid:
        polygon = polygon.convex_hull if isinstance(polygon.convex_hull, Polygon) else Polygon()
    if polygon.is_empty:
        raise GeorefError("the frame does not see the ground")
    return polygon
