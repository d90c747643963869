"""Rendering a frame of the simulated district: exact perspective, texture, light, haze.

Surfaces are polygons on flat ground, and a homography maps flat ground to the image exactly,
so each surface is projected vertex by vertex and filled in image space: the class mask is
exact to the rasteriser's sub-pixel precision. Texture is sampled from world-anchored noise
tiles, so overlapping frames see the same ground the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely import affinity
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from sim.camera import CameraModel, ViewGeometry
from sim.errors import SimError
from sim.kinds import GroundTruthClass, SurfaceKind
from sim.materials import (
    COARSE_TEXEL_M,
    COARSE_TILE,
    FINE_TEXEL_M,
    FINE_TILE,
    MACRO_TEXEL_M,
    MACRO_TILE,
    material_tables,
    texture_tiles,
)
from sim.world import SEASON_GROUND, District, Surface

MAX_RANGE_M = 1500.0  # ground beyond this distance from the nadir point is not drawn
NEAR_M = 0.5
SHIFT_BITS = 4  # sub-pixel precision of the rasteriser: 1/16 px
LOWRES = 8  # lighting, haze and macro texture are computed at 1/8 resolution
RELIEF_RES = 4  # heaps and pits are shaded on a 1/4 resolution height field
SENSOR_NOISE_OFFSET = (12.0, 12.0, 12.0, 0.0)
SOFT_EDGE_M = 0.9  # natural ground blends into its neighbour over about 2 sigma each side

UInt8Image = NDArray[np.uint8]
FloatImage = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Rendering:
    """A rendered frame before encoding: BGR pixels and the per-pixel class mask."""

    bgr: UInt8Image
    class_mask: UInt8Image  # GroundTruthClass values; 255 where the sky is
    footprint: Polygon  # visible ground, UTM
    kind_mask: UInt8Image  # SurfaceKind values (what each pixel shows); 255 where the sky is


@dataclass(frozen=True, slots=True)
class SensorEffects:
    """What the camera adds to a frame: exposure, white balance, noise, blur.

    Drawn per frame from its seed (`SensorEffects.draw`), so one flight's frames differ as a
    real camera's do; `SensorEffects.neutral()` turns everything off.
    """

    exposure: float = 1.0
    white_balance_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_level: int = 1  # how many sensor-noise layers: grows with ISO
    motion_blur_px: float = 0.0  # streak length along the flight direction
    motion_angle_deg: float = 0.0  # direction of the streak in the image
    defocus_px: float = 0.0  # Gaussian sigma

    @staticmethod
    def neutral() -> SensorEffects:
        return SensorEffects(noise_level=0)

    @staticmethod
    def draw(rng: np.random.Generator, gsd_m: float) -> SensorEffects:
        """Effects for one frame; ``gsd_m`` turns flight speed times shutter time into pixels."""
        speed_m_s = rng.uniform(3.0, 12.0)
        shutter_s = 1.0 / rng.choice([100.0, 200.0, 400.0, 800.0, 1600.0])
        return SensorEffects(
            exposure=float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2)),
            white_balance_bgr=(
                float(rng.normal(1.0, 0.035)),
                1.0,
                float(rng.normal(1.0, 0.035)),
            ),
            noise_level=int(rng.choice([1, 1, 1, 2, 3])),
            motion_blur_px=float(speed_m_s * shutter_s / max(gsd_m, 1e-3)),
            motion_angle_deg=float(rng.uniform(0.0, 180.0)),
            defocus_px=float(rng.choice([0.0, 0.0, rng.uniform(0.3, 1.2)])),
        )


_TABLES = material_tables()


@lru_cache(maxsize=4)
def _sensor_tile(level: int) -> UInt8Image:
    """Sensor noise around `SENSOR_NOISE_OFFSET`, its spread growing with the ISO ``level``.

    Mostly in brightness, little in colour: the camera's own processing removes most colour
    noise before it writes the JPEG.
    """
    rng = np.random.default_rng(20261123 + level)
    spread = math.sqrt(level)
    luma = rng.normal(0.0, 2.2 * spread, size=(512, 512, 1))
    chroma = rng.normal(0.0, 0.5 * spread, size=(512, 512, 3))
    noise = SENSOR_NOISE_OFFSET[0] + luma + chroma
    return np.clip(np.round(noise), 0, 2 * SENSOR_NOISE_OFFSET[0]).astype(np.uint8)


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


Contours = list[list[NDArray[np.int32]]]  # per polygon: its exterior ring, then its holes


def _contours(
    geometry: BaseGeometry, h_local: NDArray[np.float64], ce: float, cn: float
) -> Contours:
    """Exterior and hole rings of each polygon of a (multi)polygon as fixed-point pixel
    contours, grouped by polygon.

    Each polygon is filled on its own: filling the rings of several parts at once counts
    edge crossings across parts, and where parts meet at a vertex that lies on a scanline the
    count goes wrong for the rest of that row. An intersection can come back as a geometry
    collection (polygons with the lines or points where they only touch): its polygons count.
    """
    polygons = _polygons(geometry)
    scale = float(1 << SHIFT_BITS)
    groups = []
    for polygon in polygons:
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        group = []
        for ring in (polygon.exterior, *polygon.interiors):
            local = np.asarray(ring.coords)[:-1] - np.array([ce, cn])
            pixels = _apply_homography(local, h_local)
            group.append(np.round(pixels * scale).astype(np.int32))
        groups.append(group)
    return groups


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry]
    if isinstance(geometry, MultiPolygon | GeometryCollection):
        return [p for part in geometry.geoms for p in _polygons(part)]
    return []


def _fill_contours(
    image: NDArray[np.uint8], contours: Contours, value: float | tuple[int, int, int]
) -> None:
    for group in contours:
        cv2.fillPoly(image, group, value, cv2.LINE_8, SHIFT_BITS)


def _shadow(surface: Surface, offset: tuple[float, float]) -> BaseGeometry:
    """The ground shadow of a raised surface for a sun giving ``offset`` m per m of height.

    A standing object (a wall, a roof on its walls) casts the hull of its outline and the
    outline moved by the shadow offset; a floating one (a crane jib) only the moved outline.
    """
    de, dn = offset[0] * surface.height_m, offset[1] * surface.height_m
    parts = (
        surface.geometry.geoms if isinstance(surface.geometry, MultiPolygon) else [surface.geometry]
    )
    if surface.floating:
        return shapely.union_all([affinity.translate(part, de, dn) for part in parts])
    shadows = [
        shapely.convex_hull(shapely.union(part, affinity.translate(part, de, dn)))
        if _is_compact(part)
        else _swept(part, de, dn)
        for part in parts
    ]
    return shapely.union_all(shadows)


def _is_compact(part: BaseGeometry) -> bool:
    """Whether the convex hull of a part is close to the part (a box, not a ring of hoarding)."""
    return bool(part.area >= 0.6 * shapely.convex_hull(part).area)


def _swept(part: BaseGeometry, de: float, dn: float) -> BaseGeometry:
    """The shadow of a thin, non-convex wall: its outline swept along the sun direction."""
    steps = max(2, math.ceil(math.hypot(de, dn) / 0.25))
    return shapely.union_all(
        [affinity.translate(part, de * k / steps, dn * k / steps) for k in range(steps + 1)]
    )


def render(
    district: District,
    view: ViewGeometry,
    seed: int,
    sensor: SensorEffects | None = None,
) -> Rendering:
    """Render what ``view`` sees of ``district``.

    ``seed`` varies only what the camera adds (noise, and the `SensorEffects` unless given);
    the scene itself is the district's. A camera with lens distortion is rendered as an ideal
    pinhole camera a little larger than its frame, then warped into the distorted frame
    (pixels bilinearly, class and kind masks by nearest neighbour), before blur and noise.
    """
    rng = np.random.default_rng(seed)
    if sensor is None:
        sensor = SensorEffects.draw(rng, view.camera.gsd_m(view.height_m))
    if not view.camera.has_distortion:
        pinhole = _render_pinhole(district, view, rng, sensor)
    else:
        margin, map_x, map_y = _distortion_maps(view.camera)
        padded = replace(view, camera=view.camera.padded_pinhole(margin))
        wide = _render_pinhole(district, padded, rng, sensor)
        pinhole = Rendering(
            bgr=np.asarray(cv2.remap(wide.bgr, map_x, map_y, cv2.INTER_LINEAR), dtype=np.uint8),
            class_mask=np.asarray(
                cv2.remap(wide.class_mask, map_x, map_y, cv2.INTER_NEAREST), dtype=np.uint8
            ),
            footprint=_distorted_footprint(view, padded, wide.footprint),
            kind_mask=np.asarray(
                cv2.remap(wide.kind_mask, map_x, map_y, cv2.INTER_NEAREST), dtype=np.uint8
            ),
        )
    color = _optics(pinhole.bgr, sensor)
    return replace(pinhole, bgr=_add_sensor_noise(color, rng, sensor.noise_level))


@lru_cache(maxsize=4)
def _distortion_maps(camera: CameraModel) -> tuple[int, FloatImage, FloatImage]:
    """For each pixel of the distorted frame, where it lies in a pinhole image padded by the
    returned margin: (margin, map_x, map_y), for `cv2.remap`.

    Distortion is smooth, so the inverse is solved on a coarse grid and interpolated.
    """
    step = 8
    width, height = camera.width_px, camera.height_px
    gx = np.arange(0, width + step, step, dtype=np.float64)
    gy = np.arange(0, height + step, step, dtype=np.float64)
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    ideal = camera.undistort(grid).reshape(len(gy), len(gx), 2)
    overshoot = max(
        -ideal[..., 0].min(),
        ideal[..., 0].max() - (width - 1),
        -ideal[..., 1].min(),
        ideal[..., 1].max() - (height - 1),
        0.0,
    )
    margin = math.ceil(overshoot) + 2
    coarse_x = np.asarray(ideal[..., 0] + margin, dtype=np.float32)
    coarse_y = np.asarray(ideal[..., 1] + margin, dtype=np.float32)
    fine_u = (np.arange(width, dtype=np.float32) / step)[None, :].repeat(height, axis=0)
    fine_v = (np.arange(height, dtype=np.float32) / step)[:, None].repeat(width, axis=1)
    map_x = _f32(cv2.remap(coarse_x, fine_u, fine_v, cv2.INTER_LINEAR))
    map_y = _f32(cv2.remap(coarse_y, fine_u, fine_v, cv2.INTER_LINEAR))
    return margin, map_x, map_y


def _distorted_footprint(view: ViewGeometry, padded: ViewGeometry, wide: Polygon) -> Polygon:
    """The ground a distorted frame sees: the padded pinhole footprint cut to the frame's
    border (densified, undistorted into the padded image, cast onto the ground)."""
    if wide.is_empty:
        return wide
    cam = view.camera
    w, h = cam.width_px - 0.5, cam.height_px - 0.5
    side = np.linspace(0.0, 1.0, 33)[:-1]
    border = np.concatenate(
        [
            np.column_stack([-0.5 + side * (w + 0.5), np.full_like(side, -0.5)]),
            np.column_stack([np.full_like(side, w), -0.5 + side * (h + 0.5)]),
            np.column_stack([w - side * (w + 0.5), np.full_like(side, h)]),
            np.column_stack([np.full_like(side, -0.5), h - side * (h + 0.5)]),
        ]
    )
    margin = padded.camera.cx_px - cam.cx_px
    frame_px = Polygon(cam.undistort(border) + margin)
    ce, cn = padded.centre_utm
    visible_px = _project(wide, padded.homography_local, ce, cn).intersection(frame_px)
    if visible_px.is_empty or not isinstance(visible_px, Polygon):
        return wide
    inverse = np.linalg.inv(padded.homography_local)
    ground = _apply_homography(np.asarray(visible_px.exterior.coords), np.asarray(inverse))
    return Polygon(ground + np.array([ce, cn]))


def _render_pinhole(
    district: District, view: ViewGeometry, rng: np.random.Generator, sensor: SensorEffects
) -> Rendering:
    """The frame of an ideal pinhole camera, shaded, before blur and sensor noise."""
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
    relief_size = (math.ceil(width / RELIEF_RES), math.ceil(height / RELIEF_RES))
    relief = np.zeros((relief_size[1], relief_size[0]), dtype=np.float32)

    if not footprint.is_empty:
        ground_rgb = SEASON_GROUND[env.season]
        ring = _contours(footprint, h_local, ce, cn)
        _fill(bgr, kind, classes, ring, ground_rgb, SurfaceKind.GROUND, GroundTruthClass.BACKGROUND)
        surfaces = district.surfaces_in(footprint)
        offset = env.shadow_offset
        for surface in surfaces:
            # A labelled surface is drawn as its truth patch: where a later surface shares an
            # edge with it, its edge pixels would otherwise peek out from under that one.
            drawn = district.visible_part(surface)
            visible = surface.geometry.intersection(footprint)
            if visible.is_empty:
                continue
            contours = _contours(visible, h_local, ce, cn)
            if not contours:
                continue
            filled: Contours = []
            if drawn is surface.geometry:
                filled = contours
            elif drawn is not None and not (part := drawn.intersection(footprint)).is_empty:
                filled = _contours(part, h_local, ce, cn)
            _fill(bgr, kind, classes, filled, surface.color_rgb, surface.kind, surface.gt_class)
            if surface.relief_m != 0.0:  # relief follows the whole surface (a heap under a net)
                _add_relief(relief, contours, surface.relief_m, view)
            if surface.height_m > 0.0:
                cast = _shadow(surface, offset).intersection(footprint)
                if not cast.is_empty:
                    shadow_contours = _contours(cast, h_local, ce, cn)
                    if shadow_contours:
                        _fill_contours(shadow, shadow_contours, 1)
                if not surface.floating:
                    _fill_contours(shadow, contours, 0)

    shaded = _shade(bgr, kind, shadow, relief, view, district, sensor)
    return Rendering(bgr=shaded, class_mask=classes, footprint=footprint, kind_mask=kind)


def _add_relief(
    relief: FloatImage, contours: Contours, relief_m: float, view: ViewGeometry
) -> None:
    """Raise (or sink) the height field under one surface: a dome rising over its rim.

    The slope width is about twice the relief (loose soil rests at roughly 30 degrees).
    """
    scale = 1.0 / RELIEF_RES
    scaled = [[np.round(c * scale).astype(np.int32) for c in group] for group in contours]
    points = np.concatenate([c for group in scaled for c in group]) // (1 << SHIFT_BITS)
    x0, y0 = np.maximum(points.min(axis=0) - 2, 0)
    x1 = min(int(points[:, 0].max()) + 3, relief.shape[1])
    y1 = min(int(points[:, 1].max()) + 3, relief.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    stencil = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    origin = np.array([x0, y0]) * (1 << SHIFT_BITS)
    _fill_contours(stencil, [[c - origin for c in group] for group in scaled], 1)
    distance_px = cv2.distanceTransform(stencil, cv2.DIST_L2, 3)
    gsd_m = view.camera.gsd_m(view.height_m) * RELIEF_RES
    ramp_px = max(1.0, 2.0 * abs(relief_m) / gsd_m)
    profile = np.sqrt(np.clip(distance_px / ramp_px, 0.0, 1.0))
    region = relief[y0:y1, x0:x1]
    raised = (relief_m * profile).astype(np.float32)
    # Where a net is draped over a heap the two describe the same mound: keep the larger.
    np.copyto(region, raised, where=np.abs(raised) > np.abs(region))


def _fill(
    bgr: UInt8Image,
    kind: UInt8Image,
    classes: UInt8Image,
    contours: Contours,
    rgb: tuple[int, int, int],
    surface_kind: SurfaceKind,
    gt_class: GroundTruthClass,
) -> None:
    _fill_contours(bgr, contours, (rgb[2], rgb[1], rgb[0]))
    _fill_contours(kind, contours, int(surface_kind))
    _fill_contours(classes, contours, int(gt_class))


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


def _sun_direction_px(view: ViewGeometry, env_azimuth_deg: float) -> tuple[float, float]:
    """Unit vector in the image (u right, v down) pointing towards the sun on the ground."""
    azimuth = math.radians(env_azimuth_deg)
    ce, cn = view.centre_utm
    try:
        nadir = view.pixel_to_ground(np.array([[view.camera.cx_px, view.camera.cy_px]]))[0]
    except SimError:
        nadir = np.array([ce, cn])
    towards = nadir + 10.0 * np.array([math.sin(azimuth), math.cos(azimuth)])
    try:
        pixels = view.ground_to_pixel(np.vstack([nadir, towards]))
    except SimError:
        return (0.0, -1.0)
    du, dv = pixels[1] - pixels[0]
    norm = math.hypot(du, dv) or 1.0
    return (float(du / norm), float(dv / norm))


def _relief_shading(relief: FloatImage, view: ViewGeometry, district: District) -> FloatImage:
    """Lambert shading of the height field relative to flat ground (1.0 = flat)."""
    if not np.any(relief):
        return np.ones_like(relief)
    env = district.environment
    gsd_m = view.camera.gsd_m(view.height_m) * RELIEF_RES
    smooth = cv2.GaussianBlur(relief, (0, 0), 1.0)
    grad_u = _f32(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)) / (8.0 * gsd_m)
    grad_v = _f32(cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)) / (8.0 * gsd_m)
    su, sv = _sun_direction_px(view, env.sun_azimuth_deg)
    elevation = math.radians(env.sun_elevation_deg)
    horizontal, vertical = math.cos(elevation), math.sin(elevation)
    # Image v points down while north points up: a slope rising towards -v faces north.
    lit = (-(grad_u * su + grad_v * sv) * horizontal + vertical) / np.sqrt(
        1.0 + grad_u**2 + grad_v**2
    )
    # Under cloud the light comes from the whole sky: slopes differ far less.
    shading = 1.0 + (1.0 - 0.75 * env.overcast) * (lit / vertical - 1.0)
    return _f32(np.clip(shading, 0.3, 1.8))


def _soft_mask(kind: UInt8Image) -> UInt8Image:
    """255 where the surface kind has soft edges (natural ground), else 0."""
    return np.asarray(cv2.LUT(kind, _TABLES["soft"]), dtype=np.uint8)


def _soften(image: NDArray[Any], soft: UInt8Image, sigma_px: float) -> None:
    """Blend natural ground into its neighbours, in place: ``image`` (colours, or the texture
    weights of each pixel's surface) blurred by ``sigma_px`` is copied where ``soft`` is set
    (earth fading into grass).

    The inputs are piecewise constant per surface, so a blur changes them only near edges, and
    a symmetric blur keeps each edge where its polygon (and the class mask) says it is.
    """
    if sigma_px < 0.7:
        return
    height, width = soft.shape
    factor = max(1, min(4, int(sigma_px // 1.5)))
    small = cv2.resize(
        image, (math.ceil(width / factor), math.ceil(height / factor)), interpolation=cv2.INTER_AREA
    )
    blurred_small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor)
    blurred = cv2.resize(blurred_small, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.copyTo(blurred, soft, image)


def texture_weights(
    kind: UInt8Image, soft_sigma_px: float
) -> tuple[FloatImage, FloatImage, FloatImage, FloatImage]:
    """Each pixel's weights of the fine and coarse texture channels, its alternate tone and
    its macro blotches, from its surface kind (`sim.materials`). Where earth meets grass its
    colour fades (`_soften`) and so do its ruts, clods and tone: the weights of soft-edged
    surfaces blend over the same distance, so the edge is not left as a step in texture."""
    soft = _soft_mask(kind)
    kind4 = cv2.merge([kind] * 4)
    weights = (
        _f32(cv2.LUT(kind4, _TABLES["fine"])),
        _f32(cv2.LUT(kind4, _TABLES["coarse"])),
        _f32(cv2.LUT(cv2.merge([kind] * 3), _TABLES["tone"])),
        _f32(cv2.LUT(kind, _TABLES["macro"])),
    )
    for weight in weights:
        _soften(weight, soft, soft_sigma_px)
    return weights


def _shade(
    bgr: UInt8Image,
    kind: UInt8Image,
    shadow: UInt8Image,
    relief: FloatImage,
    view: ViewGeometry,
    district: District,
    sensor: SensorEffects,
) -> UInt8Image:
    """Texture, relief, shadows, haze, vignetting, exposure and colour style.

    Everything multiplicative is computed at half resolution (a 4 cm texel is about a pixel
    at survey heights) and applied to the full-resolution colours in 8-bit fixed point.
    """
    fine_tile, coarse_tile, macro_tile = texture_tiles()
    env = district.environment
    height, width = kind.shape
    ce, cn = view.centre_utm
    # Each district's ground looks different: the texture anchor moves with the district.
    ce, cn = ce + env.texture_offset_m[0], cn + env.texture_offset_m[1]
    local_from_image = np.linalg.inv(view.homography_local)
    half_size = (math.ceil(width / 2), math.ceil(height / 2))
    low_size = (math.ceil(width / LOWRES), math.ceil(height / LOWRES))

    half_from_image = local_from_image @ _image_from_reduced(2)
    fine = _warp_tile(
        fine_tile, _tile_from_local(ce, cn, FINE_TEXEL_M, FINE_TILE) @ half_from_image, half_size
    )
    coarse = _warp_tile(
        coarse_tile,
        _tile_from_local(ce, cn, COARSE_TEXEL_M, COARSE_TILE) @ half_from_image,
        half_size,
    )
    low_local_from_image = local_from_image @ _image_from_reduced(LOWRES)
    macro_from_local = _tile_from_local(ce, cn, MACRO_TEXEL_M, MACRO_TILE)
    low_macro = _warp_tile(macro_tile, macro_from_local @ low_local_from_image, low_size)

    # Haze transmission and vignetting vary slowly: computed on the low-resolution grid.
    low_e, low_n, low_sky = _ground_maps(view, width, height, LOWRES)
    low_e, low_n = low_e[: low_size[1], : low_size[0]], low_n[: low_size[1], : low_size[0]]
    low_sky = low_sky[: low_size[1], : low_size[0]]
    distance = np.where(low_sky > 0, 1e5, np.sqrt(low_e**2 + low_n**2 + view.height_m**2))
    transmission = _f32(np.exp(-env.haze_per_m * distance))
    gu = (np.arange(low_size[0], dtype=np.float32) * LOWRES - view.camera.cx_px) / width
    gv = (np.arange(low_size[1], dtype=np.float32) * LOWRES - view.camera.cy_px) / height
    vignette = 1.0 - 0.35 * (gu[None, :] ** 2 + gv[:, None] ** 2)
    low_scale = _f32(transmission * vignette * env.brightness * sensor.exposure)

    kind_half = np.asarray(cv2.resize(kind, half_size, interpolation=cv2.INTER_NEAREST), np.uint8)
    shadow_half = cv2.resize(shadow, half_size, interpolation=cv2.INTER_NEAREST)
    fine_weight, coarse_weight, tone, macro_weight = texture_weights(
        kind_half, SOFT_EDGE_M / view.camera.gsd_m(view.height_m) / 2.0
    )
    gain = np.einsum("ijk,ijk->ij", fine, fine_weight)
    gain += np.einsum("ijk,ijk->ij", coarse, coarse_weight)
    macro_half = cv2.resize(low_macro, half_size)
    gain += _f32(cv2.multiply(macro_half[:, :, 0], macro_weight))
    gain = np.clip(gain + 1.0, 0.15, None)
    gain *= _f32(cv2.resize(low_scale, half_size))
    shadow_lut = np.ones((1, 256), dtype=np.float32)
    shadow_lut[0, 1] = env.shadow_gain
    gain *= _f32(cv2.LUT(shadow_half, shadow_lut))
    gain *= _f32(cv2.resize(_relief_shading(relief, view, district), half_size))

    # The alternate tone (wet soil, dry grass, faded net) comes in blotches of slow noise.
    tone_mix = np.clip(0.5 + 0.9 * macro_half[:, :, 1], 0.0, 1.0)[:, :, None]
    tone = 1.0 + tone_mix * (tone - 1.0)

    warm = (1.0 - 0.06 * env.warmth, 1.0, 1.0 + 0.06 * env.warmth)
    balance = np.array(warm, dtype=np.float32) * np.array(
        sensor.white_balance_bgr, dtype=np.float32
    )
    # 8-bit fixed point: gain 1.0 is 100, so gains up to 2.5 survive.
    gain_bgr = cv2.convertScaleAbs(tone * gain[:, :, None] * balance, alpha=100.0)
    gain_full = cv2.resize(gain_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    _soften(bgr, _soft_mask(kind), SOFT_EDGE_M / view.camera.gsd_m(view.height_m))
    color = cv2.multiply(bgr, gain_full, scale=1.0 / 100.0)
    haze_bgr = np.array([205.0, 200.0, 196.0], dtype=np.float32)
    low_add = cv2.convertScaleAbs(_f32((1.0 - transmission)[:, :, None] * haze_bgr))
    hazy = cv2.add(color, cv2.resize(low_add, (width, height), interpolation=cv2.INTER_LINEAR))
    return _grade(np.asarray(hazy, dtype=np.uint8), env.saturation, env.contrast)


def _grade(color: UInt8Image, saturation: float, contrast: float) -> UInt8Image:
    """Colour grading of the camera's picture style: saturation about grey, contrast about
    mid-grey, as one 3x3 transform and one table."""
    luma = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # BGR
    matrix = saturation * np.eye(3, dtype=np.float32) + (1.0 - saturation) * luma[None, :]
    graded = cv2.transform(color, matrix)
    levels = np.arange(256, dtype=np.float32)
    table = np.clip(128.0 + (levels - 128.0) * contrast, 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(graded, table), dtype=np.uint8)


def _optics(color: UInt8Image, sensor: SensorEffects) -> UInt8Image:
    """Motion blur along the flight direction and slight defocus."""
    out = color
    if sensor.motion_blur_px >= 1.0:
        length = min(round(sensor.motion_blur_px), 15)
        size = 2 * length + 1
        kernel = np.zeros((size, size), dtype=np.float32)
        angle = math.radians(sensor.motion_angle_deg)
        du, dv = math.cos(angle) * length / 2.0, math.sin(angle) * length / 2.0
        cv2.line(
            kernel,
            (round(length - du), round(length - dv)),
            (round(length + du), round(length + dv)),
            1.0,
            1,
            cv2.LINE_AA,
        )
        kernel /= kernel.sum()
        out = np.asarray(cv2.filter2D(out, -1, kernel), dtype=np.uint8)
    if sensor.defocus_px > 0.2:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), sensor.defocus_px), dtype=np.uint8)
    return out


def _add_sensor_noise(color: UInt8Image, rng: np.random.Generator, level: int) -> UInt8Image:
    """Sensor noise from a tile offset by the seed: +noise then -offset, both saturating,
    block by block in place (no frame-sized copy of the tile)."""
    if level <= 0:
        return color
    sensor = _sensor_tile(level)
    size = sensor.shape[0]
    height, width = color.shape[:2]
    oy, ox = int(rng.integers(0, size)), int(rng.integers(0, size))
    # The tile rolled by the offset, so block (0, 0) of the frame starts at (oy, ox) of it.
    rolled = np.ascontiguousarray(np.roll(sensor, (-oy, -ox), axis=(0, 1)))
    for y in range(0, height, size):
        for x in range(0, width, size):
            block = color[y : y + size, x : x + size]
            h, w = block.shape[:2]
            cv2.add(block, rolled[:h, :w], dst=block)
            # OpenCV's stubs lack the scalar overload of subtract; a 4-tuple is a cv::Scalar.
            cv2.subtract(block, SENSOR_NOISE_OFFSET, dst=block)  # type: ignore[call-overload]
    return color
