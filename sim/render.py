"""Rendering a frame of the simulated district: exact perspective, texture, light, haze.

Surfaces are polygons on flat ground, and a homography maps flat ground to the image exactly,
so each surface is projected vertex by vertex and filled in image space: the class mask is
exact to the rasteriser's sub-pixel precision. Texture is sampled from world-anchored noise
tiles, so overlapping frames see the same ground the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from sim.camera import ViewGeometry
from sim.kinds import GroundTruthClass, Season, SurfaceKind
from sim.world import District, Surface

MAX_RANGE_M = 1500.0  # ground beyond this distance from the nadir point is not drawn
NEAR_M = 0.5
SHIFT_BITS = 4  # sub-pixel precision of the rasteriser: 1/16 px
TEXEL_M = 0.04
TILE = 1024
MACRO_TEXEL_M = 0.5
MACRO_TILE = 256
LOWRES = 8  # lighting, haze and macro texture are computed at 1/8 resolution
SENSOR_NOISE_OFFSET = (8.0, 8.0, 8.0, 0.0)

# Texture amplitudes per surface kind: fine grain, medium, coarse, stripes, macro blotches.
# (The tile mixes the three grain octaves; their mean amplitude and the macro blotches are
# combined into one grain weight, see `_weight_luts`.)
_WEIGHTS: dict[SurfaceKind, tuple[float, float, float, float, float]] = {
    SurfaceKind.GROUND: (0.06, 0.08, 0.10, 0.0, 0.12),
    SurfaceKind.BARE_SOIL: (0.10, 0.08, 0.10, 0.0, 0.14),
    SurfaceKind.NET_GREEN: (0.22, 0.12, 0.08, 0.0, 0.05),
    SurfaceKind.NET_BLACK: (0.25, 0.14, 0.10, 0.0, 0.05),
    SurfaceKind.ROAD_DUST: (0.06, 0.12, 0.16, 0.0, 0.05),
    SurfaceKind.ASPHALT: (0.05, 0.03, 0.03, 0.0, 0.04),
    SurfaceKind.CONCRETE: (0.04, 0.03, 0.04, 0.0, 0.05),
    SurfaceKind.GRAVEL: (0.16, 0.06, 0.05, 0.0, 0.06),
    SurfaceKind.BUILDING_FRAME: (0.18, 0.10, 0.05, 0.08, 0.03),
    SurfaceKind.ROOF_RED: (0.05, 0.03, 0.02, 0.18, 0.03),
    SurfaceKind.ROOF_BROWN: (0.05, 0.03, 0.02, 0.18, 0.03),
    SurfaceKind.ROOF_GRAY: (0.04, 0.02, 0.02, 0.08, 0.02),
    SurfaceKind.MACHINERY: (0.05, 0.04, 0.0, 0.0, 0.0),
    SurfaceKind.TRUCK: (0.04, 0.03, 0.0, 0.0, 0.0),
    SurfaceKind.WATER: (0.02, 0.04, 0.03, 0.0, 0.02),
    SurfaceKind.TREE: (0.25, 0.20, 0.06, 0.0, 0.04),
    SurfaceKind.CROP: (0.12, 0.08, 0.06, 0.10, 0.10),
    SurfaceKind.PLOWED_FIELD: (0.08, 0.06, 0.05, 0.22, 0.10),
    SurfaceKind.COAL: (0.20, 0.10, 0.08, 0.0, 0.03),
    SurfaceKind.RUBBLE: (0.22, 0.12, 0.08, 0.0, 0.05),
    SurfaceKind.COURTYARD: (0.06, 0.05, 0.06, 0.0, 0.08),
}
GROUND_RGB_BY_SEASON = {
    Season.SPRING: (112, 128, 84),
    Season.SUMMER: (92, 118, 70),
    Season.AUTUMN: (134, 124, 90),
    Season.WINTER: (128, 118, 98),
}

UInt8Image = NDArray[np.uint8]
FloatImage = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Rendering:
    """A rendered frame before encoding: BGR pixels and the per-pixel class mask."""

    bgr: UInt8Image
    class_mask: UInt8Image  # GroundTruthClass values; 255 where the sky is
    footprint: Polygon  # visible ground, UTM


def _wrap_blur(image: FloatImage, sigma: float) -> FloatImage:
    """Gaussian blur of a tile that wraps around at its edges (so tiles repeat seamlessly)."""
    pad = math.ceil(4 * sigma)
    padded = np.pad(image, pad, mode="wrap")
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma)
    return np.ascontiguousarray(blurred[pad:-pad, pad:-pad])


@lru_cache(maxsize=1)
def _texture_tiles() -> tuple[FloatImage, FloatImage, UInt8Image]:
    """World-anchored noise: a (grain, stripes) tile, a macro tile, and a sensor-noise tile."""
    rng = np.random.default_rng(20261123)
    grain = np.zeros((TILE, TILE), dtype=np.float32)
    for sigma, amplitude in ((0.7, 0.55), (4.0, 0.6), (14.0, 0.55)):
        octave = _wrap_blur(rng.standard_normal((TILE, TILE)).astype(np.float32), sigma)
        grain += amplitude * octave / (octave.std() + 1e-6)
    grain /= grain.std()
    rows = np.arange(TILE, dtype=np.float32)[:, None]
    warp = _wrap_blur(rng.standard_normal((TILE, TILE)).astype(np.float32), 20.0)
    stripes = np.sin(2.0 * math.pi * rows / 16.0 + 1.5 * warp / (warp.std() + 1e-6))
    tile = _f32(cv2.merge([grain, stripes.astype(np.float32)]))
    macro = _wrap_blur(rng.standard_normal((MACRO_TILE, MACRO_TILE)).astype(np.float32), 10.0)
    macro = macro / (macro.std() + 1e-6)
    noise = rng.normal(SENSOR_NOISE_OFFSET[0], 2.2, size=(512, 512, 3))
    sensor = np.clip(np.round(noise), 0, 2 * SENSOR_NOISE_OFFSET[0]).astype(np.uint8)
    return tile, _f32(macro), sensor


def _weight_luts() -> tuple[FloatImage, FloatImage]:
    """Per-kind (grain, stripes) texture weights and macro weights as 256-entry tables."""
    tile_lut = np.zeros((1, 256, 2), dtype=np.float32)
    macro_lut = np.zeros((1, 256), dtype=np.float32)
    for kind, (fine, medium, coarse, stripes, macro) in _WEIGHTS.items():
        tile_lut[0, int(kind)] = (math.sqrt((fine**2 + medium**2 + coarse**2) / 3.0) * 1.6, stripes)
        macro_lut[0, int(kind)] = macro
    return tile_lut, macro_lut


_TILE_LUT, _MACRO_LUT = _weight_luts()
_GRAIN_LUT = np.ascontiguousarray(_TILE_LUT[:, :, 0])
_STRIPE_LUT = np.ascontiguousarray(_TILE_LUT[:, :, 1])
_SHADOW_LUT = np.ones((1, 256), dtype=np.float32)
_SHADOW_LUT[0, 1] = 0.56


def visible_footprint(view: ViewGeometry) -> Polygon:
    """The ground (UTM) the camera sees, out to `MAX_RANGE_M` from its nadir point."""
    ce, cn = view.centre_utm
    reach = box(ce - MAX_RANGE_M, cn - MAX_RANGE_M, ce + MAX_RANGE_M, cn + MAX_RANGE_M)
    # Half-plane in front of the camera: depth (R^T (X - C))_z >= NEAR_M on the ground plane.
    axis = view.rotation[:, 2]  # optical axis in ENU
    a, b = axis[0], axis[1]
    depth_offset = -axis[2] * view.height_m  # depth of the nadir point is axis . (0,0,-h)
    front = _half_plane(a, b, NEAR_M - depth_offset, ce, cn, 4.0 * MAX_RANGE_M)
    ground_region = reach.intersection(front)
    if ground_region.is_empty:
        return Polygon()
    h_local = view.homography_local
    image_region = _project(ground_region, h_local, ce, cn)
    cam = view.camera
    frame = box(-0.5, -0.5, cam.width_px - 0.5, cam.height_px - 0.5)
    visible_px = image_region.intersection(frame)
    if visible_px.is_empty or not isinstance(visible_px, Polygon):
        return Polygon()
    inverse = np.linalg.inv(h_local)
    ground = _apply_homography(np.asarray(visible_px.exterior.coords), np.asarray(inverse))
    return Polygon(ground + np.array([ce, cn]))


def _half_plane(a: float, b: float, c: float, ce: float, cn: float, size: float) -> Polygon:
    """{(e, n): a*(e-ce) + b*(n-cn) >= c} clipped to a square of side 2*size around (ce, cn)."""
    square = box(ce - size, cn - size, ce + size, cn + size)
    norm = math.hypot(a, b)
    if norm < 1e-12:  # looking straight down: the whole ground is in front
        return square if c <= 0 else Polygon()
    nx, ny = a / norm, b / norm
    offset = c / norm
    px, py = ce + nx * offset, cn + ny * offset
    tx, ty = -ny, nx
    far = 4.0 * size
    half = Polygon(
        [
            (px + tx * far, py + ty * far),
            (px + tx * far + nx * far, py + ty * far + ny * far),
            (px - tx * far + nx * far, py - ty * far + ny * far),
            (px - tx * far, py - ty * far),
        ]
    )
    clipped = square.intersection(half)
    return clipped if isinstance(clipped, Polygon) else Polygon()


def _apply_homography(points: NDArray[np.float64], h: NDArray[np.float64]) -> NDArray[np.float64]:
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ h.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _project(geometry: BaseGeometry, h_local: NDArray[np.float64], ce: float, cn: float) -> Polygon:
    coords = np.asarray(geometry.exterior.coords) - np.array([ce, cn])  # type: ignore[attr-defined]
    return Polygon(_apply_homography(coords, h_local))


def _contours(
    geometry: BaseGeometry, h_local: NDArray[np.float64], ce: float, cn: float
) -> list[NDArray[np.int32]]:
    """Exterior and hole rings of a (multi)polygon as fixed-point pixel contours."""
    polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
    rings = []
    for polygon in polygons:
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        rings.append(polygon.exterior)
        rings.extend(polygon.interiors)
    scale = float(1 << SHIFT_BITS)
    contours = []
    for ring in rings:
        local = np.asarray(ring.coords)[:-1] - np.array([ce, cn])
        pixels = _apply_homography(local, h_local)
        contours.append(np.round(pixels * scale).astype(np.int32))
    return contours


def _shadow(surface: Surface, offset: tuple[float, float]) -> BaseGeometry:
    """The ground shadow of a raised surface for a sun giving ``offset`` m per m of height."""
    de, dn = offset[0] * surface.height_m, offset[1] * surface.height_m
    parts = (
        surface.geometry.geoms if isinstance(surface.geometry, MultiPolygon) else [surface.geometry]
    )
    shadows = [
        shapely.convex_hull(shapely.union(part, affinity.translate(part, de, dn))) for part in parts
    ]
    return shapely.union_all(shadows)


def render(district: District, view: ViewGeometry, seed: int) -> Rendering:
    """Render what ``view`` sees of ``district``; ``seed`` only varies the sensor noise."""
    cam = view.camera
    width, height = cam.width_px, cam.height_px
    ce, cn = view.centre_utm
    h_local = view.homography_local
    env = district.environment
    footprint = visible_footprint(view)

    sky_bgr = (214, 204, 196) if env.haze_per_m > 0.0015 else (226, 196, 170)
    bgr = np.empty((height, width, 3), dtype=np.uint8)
    bgr[:] = sky_bgr
    kind = np.full((height, width), 255, dtype=np.uint8)
    classes = np.full((height, width), 255, dtype=np.uint8)
    shadow = np.zeros((height, width), dtype=np.uint8)

    if not footprint.is_empty:
        ground_rgb = GROUND_RGB_BY_SEASON[env.season]
        ring = _contours(footprint, h_local, ce, cn)
        _fill(bgr, kind, classes, ring, ground_rgb, SurfaceKind.GROUND, GroundTruthClass.BACKGROUND)
        surfaces = district.surfaces_in(footprint)
        offset = env.shadow_offset
        for surface in surfaces:
            visible = surface.geometry.intersection(footprint)
            if visible.is_empty:
                continue
            contours = _contours(visible, h_local, ce, cn)
            if not contours:
                continue
            _fill(bgr, kind, classes, contours, surface.color_rgb, surface.kind, surface.gt_class)
            if surface.height_m > 0.0:
                cast = _shadow(surface, offset).intersection(footprint)
                if not cast.is_empty:
                    shadow_contours = _contours(cast, h_local, ce, cn)
                    if shadow_contours:
                        cv2.fillPoly(shadow, shadow_contours, 1, cv2.LINE_8, SHIFT_BITS)
                cv2.fillPoly(shadow, contours, 0, cv2.LINE_8, SHIFT_BITS)

    shaded = _shade(bgr, kind, shadow, view, district, seed)
    return Rendering(bgr=shaded, class_mask=classes, footprint=footprint)


def _fill(
    bgr: UInt8Image,
    kind: UInt8Image,
    classes: UInt8Image,
    contours: list[NDArray[np.int32]],
    rgb: tuple[int, int, int],
    surface_kind: SurfaceKind,
    gt_class: GroundTruthClass,
) -> None:
    cv2.fillPoly(bgr, contours, (rgb[2], rgb[1], rgb[0]), cv2.LINE_8, SHIFT_BITS)
    cv2.fillPoly(kind, contours, int(surface_kind), cv2.LINE_8, SHIFT_BITS)
    cv2.fillPoly(classes, contours, int(gt_class), cv2.LINE_8, SHIFT_BITS)


def _ground_maps(
    view: ViewGeometry, width: int, height: int, step: int
) -> tuple[FloatImage, FloatImage, FloatImage]:
    """Ground (east, north) offsets from the camera and a sky flag on a pixel grid."""
    inverse = np.linalg.inv(view.homography_local)
    us = (np.arange(0, width, step, dtype=np.float64) + (step - 1) / 2.0)[None, :]
    vs = (np.arange(0, height, step, dtype=np.float64) + (step - 1) / 2.0)[:, None]
    x = inverse[0, 0] * us + inverse[0, 1] * vs + inverse[0, 2]
    y = inverse[1, 0] * us + inverse[1, 1] * vs + inverse[1, 2]
    w = inverse[2, 0] * us + inverse[2, 1] * vs + inverse[2, 2]
    sky = (w <= 0).astype(np.float32)
    w = np.where(w <= 0, 1e-9, w)
    return (x / w).astype(np.float32), (y / w).astype(np.float32), sky


def _f32(array: object) -> FloatImage:
    """A float32 view (or copy) of an OpenCV result, for the type checker and for safety."""
    return np.asarray(array, dtype=np.float32)


def _warp_tile(
    tile: FloatImage, tile_from_image: NDArray[np.float64], size: tuple[int, int]
) -> FloatImage:
    return _f32(
        cv2.warpPerspective(
            tile,
            tile_from_image,
            size,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_WRAP,
        )
    )


def _tile_from_local(ce: float, cn: float, texel_m: float, tile_size: int) -> NDArray[np.float64]:
    """Texel coordinates of a world-anchored tile from ground offsets to the camera centre.

    Tile rows run north to south, so that stripes in the tile lie east-west on the ground.
    """
    period = tile_size * texel_m
    return np.array(
        [
            [1.0 / texel_m, 0.0, (ce % period) / texel_m],
            [0.0, -1.0 / texel_m, -(cn % period) / texel_m],
            [0.0, 0.0, 1.0],
        ]
    )


def _image_from_reduced(factor: int) -> NDArray[np.float64]:
    """Full-resolution pixel coordinates of the pixel centres of a ``factor``-reduced grid."""
    offset = (factor - 1) / 2.0
    return np.array([[factor, 0.0, offset], [0.0, factor, offset], [0.0, 0.0, 1.0]])


def _shade(
    bgr: UInt8Image,
    kind: UInt8Image,
    shadow: UInt8Image,
    view: ViewGeometry,
    district: District,
    seed: int,
) -> UInt8Image:
    """Texture, shadows, exposure, haze, vignetting and sensor noise.

    Everything multiplicative is computed at half resolution (a 4 cm texel is larger than a
    pixel at survey heights) and applied to the full-resolution colours in 8-bit fixed point.
    """
    tile, macro, sensor = _texture_tiles()
    env = district.environment
    height, width = kind.shape
    ce, cn = view.centre_utm
    # Each district's ground looks different: the texture anchor moves with the district.
    ce, cn = ce + env.texture_offset_m[0], cn + env.texture_offset_m[1]
    local_from_image = np.linalg.inv(view.homography_local)
    half_size = (math.ceil(width / 2), math.ceil(height / 2))
    low_size = (math.ceil(width / LOWRES), math.ceil(height / LOWRES))

    half_from_image = local_from_image @ _image_from_reduced(2)
    grain, stripes = cv2.split(
        _warp_tile(tile, _tile_from_local(ce, cn, TEXEL_M, TILE) @ half_from_image, half_size)
    )
    low_local_from_image = local_from_image @ _image_from_reduced(LOWRES)
    macro_tile_from_local = _tile_from_local(ce, cn, MACRO_TEXEL_M, MACRO_TILE)
    low_macro = _warp_tile(macro, macro_tile_from_local @ low_local_from_image, low_size)

    # Haze transmission and vignetting vary slowly: computed on the low-resolution grid.
    low_e, low_n, low_sky = _ground_maps(view, width, height, LOWRES)
    low_e, low_n = low_e[: low_size[1], : low_size[0]], low_n[: low_size[1], : low_size[0]]
    low_sky = low_sky[: low_size[1], : low_size[0]]
    distance = np.where(low_sky > 0, 1e5, np.sqrt(low_e**2 + low_n**2 + view.height_m**2))
    transmission = _f32(np.exp(-env.haze_per_m * distance))
    gu = (np.arange(low_size[0], dtype=np.float32) * LOWRES - view.camera.cx_px) / width
    gv = (np.arange(low_size[1], dtype=np.float32) * LOWRES - view.camera.cy_px) / height
    vignette = 1.0 - 0.35 * (gu[None, :] ** 2 + gv[:, None] ** 2)
    low_scale = _f32(transmission * vignette * env.brightness)

    kind_half = cv2.resize(kind, half_size, interpolation=cv2.INTER_NEAREST)
    shadow_half = cv2.resize(shadow, half_size, interpolation=cv2.INTER_NEAREST)
    gain = _f32(cv2.multiply(grain, cv2.LUT(kind_half, _GRAIN_LUT)))
    gain += _f32(cv2.multiply(stripes, cv2.LUT(kind_half, _STRIPE_LUT)))
    gain += _f32(cv2.multiply(cv2.resize(low_macro, half_size), cv2.LUT(kind_half, _MACRO_LUT)))
    gain += 1.0
    gain *= _f32(cv2.resize(low_scale, half_size))
    gain *= _f32(cv2.LUT(shadow_half, _SHADOW_LUT))

    # 8-bit fixed point: gain 1.0 is 128, so gains up to ~2 survive.
    warm = (1.0 - 0.06 * env.warmth, 1.0, 1.0 + 0.06 * env.warmth)
    gain_bgr = cv2.merge([cv2.convertScaleAbs(gain, alpha=128.0 * w) for w in warm])
    gain_full = cv2.resize(gain_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    color = cv2.multiply(bgr, gain_full, scale=1.0 / 128.0)
    haze_bgr = np.array([205.0, 200.0, 196.0], dtype=np.float32)
    low_add = cv2.convertScaleAbs(_f32((1.0 - transmission)[:, :, None] * haze_bgr))
    color = cv2.add(color, cv2.resize(low_add, (width, height), interpolation=cv2.INTER_LINEAR))

    # Sensor noise from a tile offset by the seed: +noise then -offset, both saturating.
    rng = np.random.default_rng(seed)
    oy, ox = int(rng.integers(0, sensor.shape[0])), int(rng.integers(0, sensor.shape[1]))
    reps = (
        math.ceil((height + oy) / sensor.shape[0]),
        math.ceil((width + ox) / sensor.shape[1]),
        1,
    )
    noise = np.tile(sensor, reps)[oy : oy + height, ox : ox + width]
    noisy = cv2.add(color, np.ascontiguousarray(noise))
    # OpenCV's stubs lack the scalar overload of subtract; a 4-tuple is a cv::Scalar.
    color = cv2.subtract(noisy, SENSOR_NOISE_OFFSET)  # type: ignore[call-overload]
    # Sky pixels have no texture and zero transmission: they come out as the haze colour.
    return np.asarray(color, dtype=np.uint8)
