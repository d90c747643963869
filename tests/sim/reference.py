"""An independent reader and georeferencer for simulated frames, used only by the tests.

It reads EXIF with exifread and XMP with Pillow, and casts pixels onto the ground with its own
camera axes built from DJI's angle definitions, so the tests do not check the simulator
against itself.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import cv2
import exifread
import numpy as np
from PIL import Image
from pyproj import Transformer


@dataclass(frozen=True)
class ReadBack:
    exif: dict[str, Any]
    xmp: dict[str, str]


def read_back(jpeg: bytes) -> ReadBack:
    tags = exifread.process_file(io.BytesIO(jpeg), details=False)
    with Image.open(io.BytesIO(jpeg)) as image:
        xmp_tree = image.getxmp()
    description = xmp_tree["xmpmeta"]["RDF"]["Description"]
    return ReadBack(exif=dict(tags), xmp={k: str(v) for k, v in description.items()})


def dms_to_degrees(tag: Any, reference: Any) -> float:
    d, m, s = (float(value.num) / float(value.den) for value in tag.values)
    sign = -1.0 if str(reference) in ("S", "W") else 1.0
    return sign * (d + m / 60.0 + s / 3600.0)


def utm_epsg(lat: float, lon: float) -> int:
    zone = int((lon + 180.0) // 6.0) + 1
    return (32600 if lat >= 0 else 32700) + zone


def camera_axes(yaw_deg: float, pitch_deg: float, roll_deg: float) -> tuple[np.ndarray, ...]:
    """ENU unit vectors of the optical axis, image right and image down for DJI gimbal angles."""
    yaw, pitch, roll = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    forward = np.array(
        [math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)]
    )
    right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    down = np.cross(forward, right)
    right_rolled = right * math.cos(roll) + down * math.sin(roll)
    down_rolled = down * math.cos(roll) - right * math.sin(roll)
    return forward, right_rolled, down_rolled


def undistort_with_opencv(
    pixels: np.ndarray, xmp: dict[str, str], focal: float, cx: float, cy: float
) -> np.ndarray:
    """Pixels of a frame that is not dewarped, moved to where an ideal pinhole camera sees
    them, with the DewarpData coefficients and OpenCV's own solver."""
    raw = xmp.get("DewarpData")
    if raw is None or xmp.get("DewarpFlag") == "1":
        return pixels
    coefficients = np.array([float(v) for v in raw.split(";")[1].split(",")][4:9])
    matrix = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    ideal = cv2.undistortPoints(
        np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2),
        matrix,
        coefficients,
        P=matrix,
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14),
    )
    return np.asarray(ideal, dtype=np.float64).reshape(-1, 2)


def cast_pixels(jpeg: bytes, pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """Ground points (UTM east, north) seen at ``pixels``, using only the frame's metadata."""
    meta = read_back(jpeg)
    lat = dms_to_degrees(meta.exif["GPS GPSLatitude"], meta.exif["GPS GPSLatitudeRef"])
    lon = dms_to_degrees(meta.exif["GPS GPSLongitude"], meta.exif["GPS GPSLongitudeRef"])
    xmp = meta.xmp
    height = float(xmp["RelativeAltitude"])
    focal = float(xmp["CalibratedFocalLength"])
    cx, cy = float(xmp["CalibratedOpticalCenterX"]), float(xmp["CalibratedOpticalCenterY"])
    forward, right, down = camera_axes(
        float(xmp["GimbalYawDegree"]),
        float(xmp["GimbalPitchDegree"]),
        float(xmp["GimbalRollDegree"]),
    )
    epsg = utm_epsg(lat, lon)
    east, north = Transformer.from_crs("EPSG:4326", epsg, always_xy=True).transform(lon, lat)
    pixels = undistort_with_opencv(pixels, xmp, focal, cx, cy)
    rays = (
        forward[None, :]
        + ((pixels[:, 0] - cx) / focal)[:, None] * right[None, :]
        + ((pixels[:, 1] - cy) / focal)[:, None] * down[None, :]
    )
    t = height / -rays[:, 2]
    return np.column_stack([east + rays[:, 0] * t, north + rays[:, 1] * t]), epsg
