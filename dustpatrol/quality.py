"""Frame quality before detection: frames that would give wrong or no answers are kept out,
each with the reason, never dropped silently.

Checks, cheapest first: sky or horizon in the frame, a gimbal far from nadir, a frame far from
every site (nothing to inspect: skipped, which also saves the detection), a duplicate of an
earlier frame (same position, heading and moment, or the same bytes), then on a small decode
of the image: a dark or blown-out or featureless frame (lens cap, night, fog) and blur (the
sharpest parts of the frame, by Laplacian variance on a 4 × 4 grid).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from shapely.geometry.base import BaseGeometry

from dustpatrol.settings import QualitySettings
from geo.frames import FrameMeta
from geo.georef import CameraIntrinsics, CameraPose

WORK_WIDTH_PX = 800  # sharpness and exposure are measured at this width


@dataclass(frozen=True, slots=True)
class ImageStats:
    sharpness: float  # 90th percentile of the grid cells' Laplacian variance
    brightness: float  # mean luma, 0..255
    contrast: float  # luma standard deviation


def image_stats(path: Path) -> ImageStats:
    """Sharpness and exposure of a frame, from a reduced JPEG decode (cheap on 20 MP)."""
    try:
        with Image.open(path) as image:
            image.draft("L", (WORK_WIDTH_PX, WORK_WIDTH_PX))
            gray = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode the image ({exc})") from None
    height, width = gray.shape
    if width > WORK_WIDTH_PX:
        size = (WORK_WIDTH_PX, max(1, round(height * WORK_WIDTH_PX / width)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    laplacian = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F)
    rows, cols = laplacian.shape
    cells = [
        float(
            laplacian[
                i * rows // 4 : (i + 1) * rows // 4, j * cols // 4 : (j + 1) * cols // 4
            ].var()
        )
        for i in range(4)
        for j in range(4)
    ]
    return ImageStats(
        sharpness=float(np.percentile(cells, 90)),
        brightness=float(gray.mean()),
        contrast=float(gray.std()),
    )


def horizon_in_view(camera: CameraIntrinsics, pose: CameraPose, margin_deg: float = 2.0) -> bool:
    """Whether the top edge of the frame looks at or above the horizon."""
    half_vertical_deg = math.degrees(math.atan(camera.height_px / 2.0 / camera.focal_px))
    return pose.pitch_deg + half_vertical_deg > -margin_deg


@dataclass(slots=True)
class FrameQuality:
    """The checks over a flight's frames (keeps what it needs to spot duplicates)."""

    settings: QualitySettings
    _positions: list[tuple[float, float, float, float]] = field(default_factory=list)
    _digests: set[str] = field(default_factory=set)

    def metadata_problem(
        self,
        meta: FrameMeta,
        camera: CameraIntrinsics,
        pose: CameraPose,
        ground: BaseGeometry | None,
        sites: BaseGeometry | None,
    ) -> str | None:
        """Why the frame's metadata rules it out, or None. ``ground`` is its footprint and
        ``sites`` the union of the registered sites, both in the pose's CRS."""
        rules = self.settings
        if horizon_in_view(camera, pose):
            return (
                f"sky or horizon in view (gimbal pitch {pose.pitch_deg:.0f}°): not a survey frame"
            )
        off_nadir = abs(pose.pitch_deg + 90.0)
        if off_nadir > rules.max_off_nadir_deg:
            return (
                f"gimbal pitch {pose.pitch_deg:.0f}° is {off_nadir:.0f}° off nadir "
                f"(limit {rules.max_off_nadir_deg:g}°, quality.max_off_nadir_deg)"
            )
        if ground is not None and sites is not None and not sites.is_empty:
            distance = ground.distance(sites)
            if distance > rules.max_site_distance_m:
                return f"far from every site ({distance:.0f} m away): nothing to inspect"
        stamp = meta.captured_at.timestamp() if meta.captured_at else math.nan
        for east, north, yaw, moment in self._positions:
            if (
                math.hypot(east - pose.east_m, north - pose.north_m) < rules.duplicate_distance_m
                and abs((yaw - pose.yaw_deg + 180.0) % 360.0 - 180.0) < 2.0
                and (math.isnan(stamp) or math.isnan(moment) or abs(stamp - moment) < 2.0)
            ):
                return "a duplicate of an earlier frame (same position, heading and time)"
        self._positions.append((pose.east_m, pose.north_m, pose.yaw_deg, stamp))
        return None

    def image_problem(self, path: Path) -> str | None:
        """Why the frame's pixels rule it out (blur, exposure, the same bytes again), or None."""
        rules = self.settings
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in self._digests:
            return "the same file as an earlier frame"
        self._digests.add(digest)
        try:
            stats = image_stats(path)
        except ValueError as exc:
            return str(exc)
        if stats.brightness < rules.min_brightness:
            return f"too dark (mean {stats.brightness:.0f} of 255): lens cap, night or exposure"
        if stats.brightness > rules.max_brightness:
            return f"overexposed (mean {stats.brightness:.0f} of 255)"
        if stats.contrast < rules.min_contrast:
            return f"featureless (contrast {stats.contrast:.1f}): fog, a covered or wet lens"
        if stats.sharpness < rules.min_sharpness:
            return (
                f"blurred (sharpness {stats.sharpness:.1f}, limit {rules.min_sharpness:g}, "
                "quality.min_sharpness): motion or focus"
            )
        return None
