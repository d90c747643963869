"""The simulated camera: presets, poses, the pose-noise model and exact flat-ground projection.

Conventions (the georeferencer in ``geo`` must agree with them, and its tests check it does):

* Pixel coordinates (u, v): u to the right, v down, (0, 0) at the *centre* of the top-left
  pixel; ``cx_px``/``cy_px`` are the principal point in those coordinates.
* The world frame is the district's UTM zone (east, north) with up = height above the flat
  ground, which lies at the take-off point's height (so camera height = relative altitude).
* Gimbal angles are DJI's: absolute yaw clockwise from north, pitch 0 = horizon and -90 = nadir,
  roll about the optical axis; rotation order yaw, pitch, roll (intrinsic Z-Y-X in NED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from geo.georef import undistort_pixels
from sim.errors import SimError
from sim.kinds import GnssMode

FloatArray = NDArray[np.float64]
Distortion = tuple[float, float, float, float, float]  # k1, k2, p1, p2, k3 (Brown, as OpenCV)
NO_DISTORTION: Distortion = (0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class CameraModel:
    """A camera with Brown lens distortion; focal length and principal point in pixels.

    The distortion coefficients act on normalised image coordinates, so they stay the same
    when the camera is scaled. A frame from this camera is as the drone stores it: distorted
    (DJI's ``DewarpFlag`` 0), with the coefficients in ``DewarpData``.
    """

    name: str
    make: str
    model: str
    width_px: int
    height_px: int
    focal_px: float
    cx_px: float
    cy_px: float
    focal_length_mm: float
    focal_length_35mm: int
    distortion: Distortion = NO_DISTORTION

    @property
    def has_distortion(self) -> bool:
        return any(abs(c) > 0.0 for c in self.distortion)

    def distort(self, pixels: FloatArray) -> FloatArray:
        """Where pixels (N, 2) of the ideal pinhole image land in the distorted frame."""
        points = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion:
            return points
        k1, k2, p1, p2, k3 = self.distortion
        x = (points[:, 0] - self.cx_px) / self.focal_px
        y = (points[:, 1] - self.cy_px) / self.focal_px
        r2 = x * x + y * y
        radial = 1.0 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.column_stack([xd * self.focal_px + self.cx_px, yd * self.focal_px + self.cy_px])

    def undistort(self, pixels: FloatArray) -> FloatArray:
        """Where pixels (N, 2) of the distorted frame lie in the ideal pinhole image."""
        return undistort_pixels(pixels, self.intrinsics, self.distortion)

    def padded_pinhole(self, margin_px: int) -> CameraModel:
        """The ideal pinhole camera with ``margin_px`` more pixels on every side."""
        return replace(
            self,
            width_px=self.width_px + 2 * margin_px,
            height_px=self.height_px + 2 * margin_px,
            cx_px=self.cx_px + margin_px,
            cy_px=self.cy_px + margin_px,
            distortion=NO_DISTORTION,
        )

    def scaled(self, scale: float) -> CameraModel:
        """The same camera rendering ``scale`` times as many pixels per side."""
        if not 0.01 <= scale <= 1.0:
            raise SimError(f"camera scale must be within 0.01..1, got {scale}")
        if scale == 1.0:
            return self
        width = round(self.width_px * scale)
        height = round(self.height_px * scale)
        sx, sy = width / self.width_px, height / self.height_px
        return replace(
            self,
            width_px=width,
            height_px=height,
            focal_px=self.focal_px * sx,
            cx_px=(self.cx_px + 0.5) * sx - 0.5,
            cy_px=(self.cy_px + 0.5) * sy - 0.5,
        )

    @property
    def intrinsics(self) -> FloatArray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.focal_px, 0.0, self.cx_px], [0.0, self.focal_px, self.cy_px], [0.0, 0.0, 1.0]]
        )

    def gsd_m(self, height_m: float) -> float:
        """Ground sample distance (m/px) at the image centre looking straight down."""
        return height_m / self.focal_px


CAMERA_PRESETS: dict[str, CameraModel] = {
    # DJI Mavic 3 Enterprise wide camera: 4/3" 20 MP, 12.29 mm (24 mm equivalent).
    "m3e": CameraModel(
        name="m3e",
        make="DJI",
        model="M3E",
        width_px=5280,
        height_px=3956,
        focal_px=3713.29,
        cx_px=2647.12,
        cy_px=1969.35,
        focal_length_mm=12.29,
        focal_length_35mm=24,
        # Mild barrel distortion of the 24 mm-equivalent lens (DewarpData of this camera).
        distortion=(-0.11257524, 0.01487443, -0.00008572, 0.0, -0.02706411),
    ),
    # DJI Matrice 30 wide camera: 1/2" 12 MP, 4.5 mm (24 mm equivalent).
    "m30_wide": CameraModel(
        name="m30_wide",
        make="DJI",
        model="M30",
        width_px=4000,
        height_px=3000,
        focal_px=2812.5,
        cx_px=1996.4,
        cy_px=1503.8,
        focal_length_mm=4.5,
        focal_length_35mm=24,
        distortion=(-0.1025, 0.0212, 0.00011, -0.00009, -0.0098),
    ),
}


def camera_preset(name: str, scale: float = 1.0) -> CameraModel:
    """A named camera preset, optionally scaled down for fast renders."""
    try:
        camera = CAMERA_PRESETS[name]
    except KeyError:
        raise SimError(
            f"unknown camera preset {name!r}; choose one of {', '.join(CAMERA_PRESETS)}"
        ) from None
    return camera.scaled(scale)


@dataclass(frozen=True, slots=True)
class Pose:
    """Where the drone and its camera were when a frame was taken."""

    lat_deg: float
    lon_deg: float
    altitude_ellipsoid_m: float
    relative_altitude_m: float  # height above the take-off point (= above the flat ground)
    gimbal_yaw_deg: float = 0.0
    gimbal_pitch_deg: float = -90.0
    gimbal_roll_deg: float = 0.0
    flight_yaw_deg: float = 0.0
    flight_pitch_deg: float = 0.0
    flight_roll_deg: float = 0.0
    time_utc: datetime = datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC)

    def validate(self) -> None:
        if not -90.0 <= self.lat_deg <= 90.0 or not -180.0 <= self.lon_deg <= 180.0:
            raise SimError(f"position ({self.lat_deg}, {self.lon_deg}) is not a valid lat/lon")
        if self.relative_altitude_m <= 0.5:
            raise SimError(
                f"relative altitude {self.relative_altitude_m} m: the camera must be above ground"
            )
        if self.gimbal_pitch_deg >= 0.0 or self.gimbal_pitch_deg < -90.0:
            raise SimError(
                f"gimbal pitch {self.gimbal_pitch_deg} deg must be within -90 (nadir) and 0 "
                "(horizon, excluded): the camera has to see the ground"
            )
        if self.time_utc.tzinfo is None:
            raise SimError("pose time must be timezone-aware (UTC)")


def rotation_world_from_camera(yaw_deg: float, pitch_deg: float, roll_deg: float) -> FloatArray:
    """Rotation taking camera-frame vectors (x right, y down, z optical axis) to ENU."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array([[math.cos(y), -math.sin(y), 0.0], [math.sin(y), math.cos(y), 0.0], [0, 0, 1.0]])
    ry = np.array([[math.cos(p), 0.0, math.sin(p)], [0, 1.0, 0], [-math.sin(p), 0.0, math.cos(p)]])
    rx = np.array([[1.0, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ned_from_body = rz @ ry @ rx
    body_from_camera = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    enu_from_ned = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return np.asarray(enu_from_ned @ ned_from_body @ body_from_camera, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ViewGeometry:
    """A camera placed in the world: exact projection between pixels and flat ground.

    ``centre_utm`` is (east, north) of the camera; ``height_m`` its height above the ground.
    Ground coordinates are UTM metres.
    """

    camera: CameraModel
    rotation: FloatArray  # world (ENU) from camera
    centre_utm: tuple[float, float]
    height_m: float

    @property
    def homography_local(self) -> FloatArray:
        """Maps ground (east - centre_e, north - centre_n, 1) to homogeneous pixels."""
        plane = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -self.height_m]])
        return np.asarray(self.camera.intrinsics @ self.rotation.T @ plane)

    def ground_to_pixel(self, points_utm: FloatArray) -> FloatArray:
        """Project ground points (N, 2) in UTM to pixels (N, 2); points behind fail."""
        local = np.asarray(points_utm, dtype=np.float64) - np.asarray(self.centre_utm)
        offsets = np.column_stack([local, np.full(len(local), -self.height_m)])
        in_camera = offsets @ self.rotation  # rows: R^T (X - C)
        if np.any(in_camera[:, 2] <= 1e-6):
            raise SimError("a ground point lies behind the camera")
        k = self.camera.intrinsics
        u = k[0, 0] * in_camera[:, 0] / in_camera[:, 2] + k[0, 2]
        v = k[1, 1] * in_camera[:, 1] / in_camera[:, 2] + k[1, 2]
        return self.camera.distort(np.column_stack([u, v]))

    def pixel_to_ground(self, pixels: FloatArray) -> FloatArray:
        """Cast pixels (N, 2) onto the ground; returns UTM (N, 2). Sky pixels fail."""
        pixels = self.camera.undistort(np.asarray(pixels, dtype=np.float64))
        k = self.camera.intrinsics
        rays_camera = np.column_stack(
            [
                (pixels[:, 0] - k[0, 2]) / k[0, 0],
                (pixels[:, 1] - k[1, 2]) / k[1, 1],
                np.ones(len(pixels)),
            ]
        )
        rays = rays_camera @ self.rotation.T
        if np.any(rays[:, 2] >= -1e-9):
            raise SimError("a pixel looks at or above the horizon")
        t = self.height_m / -rays[:, 2]
        return np.asarray(self.centre_utm) + rays[:, :2] * t[:, None]


@dataclass(frozen=True, slots=True)
class PoseError:
    """How a reported pose differs from the true one, and what the metadata claims about it."""

    gnss_mode: GnssMode
    east_m: float
    north_m: float
    up_m: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    std_lon_m: float  # the RtkStdLon the metadata reports
    std_lat_m: float
    std_hgt_m: float


# Position standard deviations (horizontal, vertical) in metres by GNSS mode: fixed, or drawn
# per frame from a range, as the receiver's own estimate varies.
GNSS_STD_M: dict[GnssMode, tuple[tuple[float, float], tuple[float, float]]] = {
    GnssMode.PERFECT: ((0.0, 0.0), (0.0, 0.0)),
    GnssMode.RTK_FIXED: ((0.015, 0.025), (0.02, 0.04)),
    GnssMode.RTK_FLOAT: ((0.3, 1.0), (0.5, 1.5)),
    GnssMode.SINGLE: ((2.0, 5.0), (3.0, 8.0)),
}


@dataclass(frozen=True, slots=True)
class PoseNoise:
    """The pose-noise model: GNSS error by mode, attitude error by standard deviation."""

    gnss_mode: GnssMode = GnssMode.RTK_FIXED
    yaw_std_deg: float = 0.5
    tilt_std_deg: float = 0.2  # pitch and roll of the gimbal

    def draw(self, rng: np.random.Generator) -> PoseError:
        (h_low, h_high), (v_low, v_high) = GNSS_STD_M[self.gnss_mode]
        if self.gnss_mode is GnssMode.PERFECT:
            # RtkStd written as for a fixed solution; the pose itself is exact.
            return PoseError(self.gnss_mode, 0, 0, 0, 0, 0, 0, 0.01, 0.01, 0.02)
        std_h = float(rng.uniform(h_low, h_high))
        std_v = float(rng.uniform(v_low, v_high))
        return PoseError(
            gnss_mode=self.gnss_mode,
            east_m=float(rng.normal(0.0, std_h)),
            north_m=float(rng.normal(0.0, std_h)),
            up_m=float(rng.normal(0.0, std_v)),
            yaw_deg=float(rng.normal(0.0, self.yaw_std_deg)),
            pitch_deg=float(rng.normal(0.0, self.tilt_std_deg)),
            roll_deg=float(rng.normal(0.0, self.tilt_std_deg)),
            std_lon_m=std_h,
            std_lat_m=std_h,
            std_hgt_m=std_v,
        )


def quantize_pose(pose: Pose) -> Pose:
    """Round a pose to what the frame metadata can carry, so that metadata == pose exactly.

    Latitude/longitude to 1e-9 degrees (0.1 mm), altitudes to 1 mm, angles to 1e-4 degrees.
    """
    return replace(
        pose,
        lat_deg=round(pose.lat_deg, 9),
        lon_deg=round(pose.lon_deg, 9),
        altitude_ellipsoid_m=round(pose.altitude_ellipsoid_m, 3),
        relative_altitude_m=round(pose.relative_altitude_m, 3),
        gimbal_yaw_deg=round(pose.gimbal_yaw_deg, 4),
        gimbal_pitch_deg=round(pose.gimbal_pitch_deg, 4),
        gimbal_roll_deg=round(pose.gimbal_roll_deg, 4),
        flight_yaw_deg=round(pose.flight_yaw_deg, 4),
        flight_pitch_deg=round(pose.flight_pitch_deg, 4),
        flight_roll_deg=round(pose.flight_roll_deg, 4),
        time_utc=pose.time_utc.replace(microsecond=0),
    )


def wrap_degrees(angle_deg: float) -> float:
    """An angle in (-180, 180]."""
    wrapped = (angle_deg + 180.0) % 360.0 - 180.0
    return 180.0 if wrapped == -180.0 else wrapped
