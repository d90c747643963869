"""A frame as map imagery: warped north-up onto the longitude/latitude box of its ground
footprint, transparent outside it, so the analysts' map can lay the flight's own photos under
the findings (no internet basemap needed).

The warp is the homography that takes the image corners to their ground points (cast with
`geo.georef` from the frame's own metadata); a frame whose corners do not all reach the
ground (an oblique view with sky or a far horizon) has no overlay. Overlays are cached on
disk by content hash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from api.errors import InvalidInputError
from api.models.flights import Frame
from api.services.frames import frame_camera, frame_file
from dustpatrol.settings import Settings
from dustpatrol.storage import MissingObjectError, content_key, open_storage
from geo.crs import WGS84, transformer
from geo.errors import GeoError
from geo.georef import pixel_to_ground

OVERLAY_WIDTH_PX = 768
MAX_CORNER_RANGE_M = 600.0  # farther corners make a smeared, useless overlay


@dataclass(frozen=True, slots=True)
class Overlay:
    png: bytes
    bounds: tuple[float, float, float, float]  # west, south, east, north in degrees


def frame_overlay(settings: Settings, frame: Frame) -> Overlay:
    """The frame warped onto its footprint's box (cached)."""
    if frame.status != "ready":
        raise InvalidInputError(
            f"frame {frame.id} is {frame.status}: only frames with a position and a footprint "
            "have map imagery"
        )
    storage = open_storage(settings)
    cache = content_key("overlays", frame.sha256, ".png")
    bounds_key = content_key("overlays", frame.sha256, ".json")
    try:  # the bounds are written last: with them there, the picture is there too
        west, south, east, north = json.loads(storage.get(bounds_key))
        return Overlay(storage.get(cache), (west, south, east, north))
    except MissingObjectError:
        pass
    with frame_file(settings, frame) as source:
        overlay = _render(settings, source, frame.filename)
    storage.put(cache, overlay.png)
    storage.put(bounds_key, json.dumps(list(overlay.bounds)).encode())
    return overlay


def _render(settings: Settings, source: Path, name: str) -> Overlay:
    try:
        _, camera, pose = frame_camera(source, name, settings)
        w, h = camera.width_px - 1.0, camera.height_px - 1.0
        corners_px = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])
        ground = pixel_to_ground(corners_px, camera, pose, settings.georeferencing.ground_height_m)
    except GeoError as exc:
        raise InvalidInputError(f"frame {name} has no map imagery: {exc}") from None
    ranges = np.hypot(ground.points[:, 0] - pose.east_m, ground.points[:, 1] - pose.north_m)
    if ranges.max() > MAX_CORNER_RANGE_M:
        raise InvalidInputError(
            f"frame {name} looks too far (a corner {ranges.max():.0f} m away): an oblique view "
            "has no map imagery"
        )
    lon, lat = transformer(pose.crs, WGS84).transform(ground.points[:, 0], ground.points[:, 1])
    west, east = float(np.min(lon)), float(np.max(lon))
    south, north = float(np.min(lat)), float(np.max(lat))
    # Output pixels square on the ground: a degree of longitude is cos(latitude) as long.
    aspect = (north - south) / ((east - west) * math.cos(math.radians((north + south) / 2)))
    width = OVERLAY_WIDTH_PX
    height = max(1, round(width * aspect))
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidInputError(f"frame {name} cannot be decoded")
    # Shrink first: warping a 20 MP frame into 768 px would only alias.
    shrink = min(1.0, 2.0 * max(width, height) / max(image.shape[:2]))
    if shrink < 1.0:
        image = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    sh, sw = image.shape[:2]
    source_corners = np.array(
        [[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]], dtype=np.float32
    )
    target_corners = np.column_stack(
        [
            (lon - west) / (east - west) * (width - 1),
            (north - lat) / (north - south) * (height - 1),
        ]
    ).astype(np.float32)
    homography = cv2.getPerspectiveTransform(source_corners, target_corners)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    warped = cv2.warpPerspective(
        rgba,
        homography,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    ok, png = cv2.imencode(".png", warped)
    if not ok:
        raise InvalidInputError(f"frame {name}: the overlay could not be encoded")
    return Overlay(png.tobytes(), (west, south, east, north))
