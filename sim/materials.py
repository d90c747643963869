"""How each surface kind looks: procedural, world-anchored texture layers and their weights.

Everything here is generated from fixed seeds (no photo textures): a set of wrapping texture
tiles, each channel one visual ingredient (grain, furrows, clods and stones, mesh weave, tyre
tracks, net folds, slab joints and cracks, stains), and per surface kind a weight for each
ingredient, an alternate tone (wet or dry soil, faded net, dry grass) mixed in by slow noise,
and whether its edges are soft (earth fading into grass) or hard (a roof).

Tiles are anchored to the ground, so overlapping frames see the same ruts in the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from sim.kinds import SurfaceKind

FloatImage = NDArray[np.float32]

FINE_TEXEL_M = 0.04  # grain, furrows, clods, weave: 1024 texels = 41 m before repeating
FINE_TILE = 1024
COARSE_TEXEL_M = 0.1  # tracks, folds, joints, stains: 1024 texels = 102 m
COARSE_TILE = 1024
MACRO_TEXEL_M = 0.5  # brightness blotches and tone mixing: 256 texels = 128 m
MACRO_TILE = 256

# The weights below were set by eye; these factors scale all fine and coarse texture so that
# gradient statistics match real photos at the analysis resolution (`sim compare`, median
# over districts: a single district's picture style moves them by a third).
FINE_STRENGTH = 0.8
COARSE_STRENGTH = 0.5

FINE_CHANNELS = ("grain", "stripes", "clods", "weave")
COARSE_CHANNELS = ("tracks", "folds", "joints", "stains")


@dataclass(frozen=True, slots=True)
class Material:
    """Texture weights (fractions of brightness) and tone of one surface kind."""

    grain: float = 0.05
    stripes: float = 0.0
    clods: float = 0.0
    weave: float = 0.0
    tracks: float = 0.0
    folds: float = 0.0
    joints: float = 0.0
    stains: float = 0.0
    macro: float = 0.05
    alt_tone: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB ratio of the alternate tone
    soft_edge: bool = False  # natural ground: edges fade over decimetres

    def fine(self) -> tuple[float, float, float, float]:
        return (self.grain, self.stripes, self.clods, self.weave)

    def coarse(self) -> tuple[float, float, float, float]:
        return (self.tracks, self.folds, self.joints, self.stains)


WET_SOIL = (0.7, 0.67, 0.62)  # darker and a little more saturated, as damp earth is
DRY_GRASS = (1.1, 1.06, 1.0)
FADED_NET = (1.25, 1.15, 1.2)

MATERIALS: dict[SurfaceKind, Material] = {
    SurfaceKind.GROUND: Material(
        grain=0.13,
        clods=0.1,
        tracks=0.05,
        stains=0.12,
        macro=0.22,
        alt_tone=DRY_GRASS,
        soft_edge=True,
    ),
    SurfaceKind.BARE_SOIL: Material(
        grain=0.03,
        clods=0.08,
        tracks=0.16,
        stains=0.16,
        macro=0.14,
        alt_tone=WET_SOIL,
        soft_edge=True,
    ),
    SurfaceKind.SPOIL_HEAP: Material(
        grain=0.06, clods=0.12, stains=0.08, macro=0.08, alt_tone=WET_SOIL, soft_edge=True
    ),
    SurfaceKind.PIT: Material(
        grain=0.03,
        clods=0.08,
        tracks=0.14,
        stains=0.16,
        macro=0.18,
        alt_tone=WET_SOIL,
        soft_edge=True,
    ),
    SurfaceKind.NET_GREEN: Material(
        grain=0.08, weave=0.22, folds=0.22, stains=0.08, macro=0.08, alt_tone=FADED_NET
    ),
    SurfaceKind.NET_BLACK: Material(
        grain=0.08, weave=0.28, folds=0.25, stains=0.10, macro=0.06, alt_tone=(1.5, 1.45, 1.4)
    ),
    SurfaceKind.ROAD_DUST: Material(
        grain=0.05,
        clods=0.06,
        tracks=0.2,
        stains=0.10,
        macro=0.06,
        alt_tone=WET_SOIL,
        soft_edge=True,
    ),
    SurfaceKind.ASPHALT: Material(grain=0.07, joints=0.06, stains=0.14, macro=0.05),
    SurfaceKind.CONCRETE: Material(
        grain=0.03, joints=0.07, stains=0.14, tracks=0.06, macro=0.06, alt_tone=(0.9, 0.9, 0.88)
    ),
    SurfaceKind.GRAVEL: Material(
        grain=0.1, clods=0.12, tracks=0.1, stains=0.08, macro=0.06, soft_edge=True
    ),
    SurfaceKind.BUILDING_FRAME: Material(grain=0.18, stripes=0.10, joints=0.2, macro=0.03),
    SurfaceKind.ROOF_RED: Material(grain=0.05, stripes=0.18, stains=0.06, macro=0.03),
    SurfaceKind.ROOF_BROWN: Material(grain=0.05, stripes=0.18, stains=0.06, macro=0.03),
    SurfaceKind.ROOF_GRAY: Material(grain=0.04, stripes=0.08, joints=0.06, macro=0.02),
    SurfaceKind.MACHINERY: Material(grain=0.05, joints=0.1),
    SurfaceKind.TRUCK: Material(grain=0.04, joints=0.1),
    SurfaceKind.WATER: Material(grain=0.02, stains=0.06, macro=0.03),
    SurfaceKind.TREE: Material(grain=0.3, clods=0.25, macro=0.05, alt_tone=(0.8, 0.85, 0.8)),
    SurfaceKind.CROP: Material(
        grain=0.12, stripes=0.12, tracks=0.04, macro=0.12, alt_tone=DRY_GRASS, soft_edge=True
    ),
    SurfaceKind.PLOWED_FIELD: Material(
        grain=0.08, stripes=0.25, clods=0.12, macro=0.12, alt_tone=WET_SOIL, soft_edge=True
    ),
    SurfaceKind.COAL: Material(grain=0.22, clods=0.2, macro=0.04),
    SurfaceKind.RUBBLE: Material(grain=0.16, clods=0.25, stains=0.08, macro=0.06, soft_edge=True),
    SurfaceKind.COURTYARD: Material(grain=0.06, joints=0.05, stains=0.1, macro=0.08),
    SurfaceKind.HOARDING: Material(grain=0.03, stripes=0.1),
    SurfaceKind.PREFAB_ROOF: Material(grain=0.03, stripes=0.22, stains=0.05),
    SurfaceKind.PIPES: Material(grain=0.04, stripes=0.15),
    SurfaceKind.STEEL: Material(grain=0.25, stripes=0.3),
    SurfaceKind.CRANE: Material(grain=0.1, weave=0.3),
    SurfaceKind.TURF: Material(grain=0.05, stripes=0.08, joints=0.05, macro=0.03),
    SurfaceKind.RUNNING_TRACK: Material(grain=0.05, stripes=0.05, macro=0.03),
    SurfaceKind.TARP_BLUE: Material(grain=0.03, folds=0.3, macro=0.02),
    SurfaceKind.GREENHOUSE: Material(grain=0.04, stripes=0.3, folds=0.1, macro=0.05),
    SurfaceKind.SOLAR_PANEL: Material(grain=0.03, weave=0.2, joints=0.25),
    SurfaceKind.DIRT_TRACK: Material(
        grain=0.1,
        clods=0.15,
        tracks=0.3,
        stains=0.08,
        macro=0.1,
        alt_tone=WET_SOIL,
        soft_edge=True,
    ),
    SurfaceKind.SAND: Material(
        grain=0.06,
        stripes=0.04,
        stains=0.06,
        macro=0.1,
        alt_tone=(0.9, 0.9, 0.92),
        soft_edge=True,
    ),
    SurfaceKind.SANDBAG: Material(grain=0.1, folds=0.2),
    SurfaceKind.STUBBLE: Material(
        grain=0.14, stripes=0.2, macro=0.1, alt_tone=(0.85, 0.82, 0.8), soft_edge=True
    ),
}


def material_tables() -> dict[str, NDArray[np.float32] | NDArray[np.uint8]]:
    """Per-kind lookup tables (256 entries, indexed by `SurfaceKind` value).

    ``fine`` and ``coarse``: (1, 256, 4) weights of the texture channels; ``macro``: (1, 256);
    ``tone``: (1, 256, 3) BGR ratio of the alternate tone; ``soft``: (1, 256) 0 or 255.
    """
    fine = np.zeros((1, 256, 4), dtype=np.float32)
    coarse = np.zeros((1, 256, 4), dtype=np.float32)
    macro = np.zeros((1, 256), dtype=np.float32)
    tone = np.ones((1, 256, 3), dtype=np.float32)
    soft = np.zeros((1, 256), dtype=np.uint8)
    for kind, material in MATERIALS.items():
        fine[0, int(kind)] = np.asarray(material.fine()) * FINE_STRENGTH
        coarse[0, int(kind)] = np.asarray(material.coarse()) * COARSE_STRENGTH
        macro[0, int(kind)] = material.macro
        tone[0, int(kind)] = material.alt_tone[::-1]
        soft[0, int(kind)] = 255 if material.soft_edge else 0
    return {"fine": fine, "coarse": coarse, "macro": macro, "tone": tone, "soft": soft}


def _wrap_blur(image: FloatImage, sigma: float | tuple[float, float]) -> FloatImage:
    """Gaussian blur of a tile that wraps around at its edges (so tiles repeat seamlessly)."""
    sx, sy = (sigma, sigma) if isinstance(sigma, float | int) else sigma
    pad = math.ceil(4 * max(sx, sy))
    padded = np.pad(image, pad, mode="wrap")
    blurred = cv2.GaussianBlur(padded, (0, 0), sigmaX=sx, sigmaY=sy)
    return np.ascontiguousarray(blurred[pad:-pad, pad:-pad], dtype=np.float32)


def _normalised(image: NDArray[np.floating]) -> FloatImage:
    centred = image - image.mean()
    return np.asarray(centred / (centred.std() + 1e-6), dtype=np.float32)


def _noise(rng: np.random.Generator, size: int, sigma: float | tuple[float, float]) -> FloatImage:
    return _normalised(_wrap_blur(rng.standard_normal((size, size)).astype(np.float32), sigma))


def _draw_wrapped(
    canvas: NDArray[np.float32], points: NDArray[np.float64], value: float, thickness: int
) -> None:
    """A polyline drawn on a wrapping tile (drawn at the 9 wrap offsets)."""
    size = canvas.shape[0]
    for dx in (-size, 0, size):
        for dy in (-size, 0, size):
            shifted = np.round((points + np.array([dx, dy])) * 16).astype(np.int32)
            cv2.polylines(canvas, [shifted], False, value, thickness, cv2.LINE_AA, 4)


@lru_cache(maxsize=1)
def texture_tiles() -> tuple[FloatImage, FloatImage, FloatImage]:
    """(fine 4-channel tile, coarse 4-channel tile, macro 2-channel tile), each channel with
    zero mean and unit-ish spread, generated once from a fixed seed."""
    rng = np.random.default_rng(20261202)
    n = FINE_TILE
    grain = np.zeros((n, n), dtype=np.float32)
    for sigma, amplitude in ((0.7, 0.55), (4.0, 0.6), (14.0, 0.55)):
        grain += amplitude * _noise(rng, n, sigma)
    grain = _normalised(grain)
    rows = np.arange(n, dtype=np.float32)[:, None]
    warp = _noise(rng, n, 20.0)
    stripes = np.sin(2.0 * math.pi * rows / 16.0 + 1.5 * warp).astype(np.float32)
    stripes = np.broadcast_to(stripes, (n, n)).astype(np.float32)
    # Clods and stones: sparse bright and dark specks of a few centimetres with soft shadows.
    clods = np.zeros((n, n), dtype=np.float32)
    for radius_px, count, value in ((1, 26000, 1.0), (2, 5000, -1.0), (3, 1500, 1.0)):
        centres = rng.integers(0, n, size=(count, 2))
        signs = np.where(rng.random(count) < 0.5, value, -value)
        for (x, y), sign in zip(centres, signs, strict=True):
            cv2.circle(clods, (int(x), int(y)), radius_px, float(sign), -1)
    clods = _normalised(_wrap_blur(clods, 0.6))
    # Woven mesh: a fine two-way weave with slow moire-like beats.
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    weave = np.sin(math.pi * xx * 0.98) * np.sin(math.pi * yy * 1.02) + 0.4 * np.sin(
        math.pi * (xx + yy) / 7.0
    )
    weave = _normalised(weave + 0.3 * _noise(rng, n, 1.0))
    fine = cv2.merge([grain, stripes, clods, weave.astype(np.float32)])

    m = COARSE_TILE
    # Tyre tracks: many curved paired ruts (dark, with a lighter ridge between them).
    tracks = np.zeros((m, m), dtype=np.float32)
    for _ in range(90):
        centre = rng.uniform(0, m, 2)
        radius = rng.uniform(60, 600)
        start = rng.uniform(0, 2 * math.pi)
        sweep = rng.uniform(0.3, 1.6) * rng.choice([-1.0, 1.0])
        angles = start + sweep * np.linspace(0.0, 1.0, 80)
        gauge = rng.uniform(8.0, 10.0) / 2.0  # about 1.8 m between wheels at 10 cm texels
        for side in (-gauge, gauge):
            r = radius + side
            path = np.column_stack([centre[0] + r * np.cos(angles), centre[1] + r * np.sin(angles)])
            _draw_wrapped(tracks, path, float(-rng.uniform(0.4, 1.0)), int(rng.integers(3, 6)))
    tracks = _normalised(_wrap_blur(tracks, 1.5) + 0.15 * _noise(rng, m, 1.0))
    # Folds and wrinkles of net and tarp: ridges along a direction that wanders.
    ridge_a = _noise(rng, m, (1.5, 9.0))
    ridge_b = _noise(rng, m, (9.0, 1.5))
    mix = _noise(rng, m, 40.0)
    folds = _normalised(np.where(mix > 0, ridge_a, ridge_b) + 0.5 * _noise(rng, m, 3.0))
    # Slab joints every 5 m and random cracks.
    joints = np.zeros((m, m), dtype=np.float32)
    step = 50
    joints[::step, :] = -1.0
    joints[:, ::step] = -1.0
    for _ in range(120):
        crack_start = rng.uniform(0, m, 2)
        walk = np.cumsum(rng.normal(0.0, 3.0, size=(25, 2)), axis=0) + crack_start
        _draw_wrapped(joints, walk, -1.0, 1)
    joints = _normalised(_wrap_blur(joints, 0.5) + 0.3 * _noise(rng, m, 2.0))
    # Stains: wet patches, oil and dust films, as thresholded smooth noise.
    stain_field = _noise(rng, m, 12.0)
    stains = _normalised(-np.clip(stain_field - 0.8, 0.0, None) + 0.2 * _noise(rng, m, 3.0))
    coarse = cv2.merge([tracks, folds, joints, stains])

    k = MACRO_TILE
    macro = cv2.merge([_noise(rng, k, 10.0), _noise(rng, k, 6.0)])
    return (
        np.asarray(fine, dtype=np.float32),
        np.asarray(coarse, dtype=np.float32),
        np.asarray(macro, dtype=np.float32),
    )
