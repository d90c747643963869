"""Renders beside real photos: a contact sheet to look at and image statistics to compare.

Both sides are resampled to one ground resolution and measured over like regions: in real
photos the regions marked by hand (``regions.json``, see tests/vision/data/real_reference),
in renders the per-pixel truth (exposed soil) and surface kinds (grass, crops, trees).

Statistics per region kind: colour in CIE Lab (mean and spread of L, a, b), the gradient
magnitude distribution (median and 90th percentile of the L gradient, per metre), the slope
of the radially averaged power spectrum of L (log-log, between 0.5 m and 4 m wavelengths),
and, between soil and vegetation, an edge transition width (the L contrast of the two
divided by the 95th percentile gradient where they meet, in metres). Where soil and vegetation
meet is measured only where they meet each other: a render knows every other surface (the
hoarding between a site's earth and the verge outside, a road, a net) and leaves out pixels
beside those, whose hard edges are not a soil-to-grass transition; the real photos' marked
regions carry no such mask.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from sim.camera import camera_preset
from sim.errors import SimError
from sim.kinds import GroundTruthClass, SurfaceKind
from sim.render import render
from sim.shots import pose_at, view_for
from sim.world import District

COMPARE_GSD_M = 0.1
REGION_KINDS = ("exposed_soil", "vegetation")
VEGETATION_KINDS = (SurfaceKind.GROUND, SurfaceKind.TREE)  # grass and trees, as marked
UInt8Image = NDArray[np.uint8]
BoolImage = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Sample:
    """One image at `COMPARE_GSD_M` with its region masks."""

    name: str
    bgr: UInt8Image
    regions: dict[str, BoolImage]
    # Surfaces that are neither region kind where that is known (renders), else None.
    other: BoolImage | None = None


def real_samples(folder: Path, gsd_m: float = COMPARE_GSD_M) -> list[Sample]:
    """The photos of ``folder`` with the regions of its ``regions.json``, at ``gsd_m``."""
    index = folder / "regions.json"
    if not index.is_file():
        raise SimError(
            f"{folder} has no regions.json: mark soil and vegetation polygons per photo first "
            "(see tests/vision/data/real_reference/README.md)"
        )
    try:
        marked = json.loads(index.read_text(encoding="utf-8"))
        photo_gsd = float(marked["gsd_m"])
        images = dict(marked["images"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SimError(f"{index} is not a regions file ({exc})") from None
    samples = []
    for name, regions in sorted(images.items()):
        image = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if image is None:
            raise SimError(f"{folder / name} (named in regions.json) cannot be read")
        masks = {kind: np.zeros(image.shape[:2], dtype=np.uint8) for kind in REGION_KINDS}
        for region in regions:
            kind = region["class"]
            if kind not in masks:
                raise SimError(f"{index}: {name} has a region of unknown class {kind!r}")
            polygon = np.round(np.asarray(region["polygon"], dtype=np.float64)).astype(np.int32)
            cv2.fillPoly(masks[kind], [polygon], 1)
        scale = photo_gsd / gsd_m
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        samples.append(
            Sample(
                name,
                np.asarray(small, dtype=np.uint8),
                {
                    k: cv2.resize(m, size, interpolation=cv2.INTER_NEAREST).astype(bool)
                    for k, m in masks.items()
                },
            )
        )
    return samples


def render_samples(
    district: District,
    count: int,
    gsd_m: float = COMPARE_GSD_M,
    seed: int = 0,
    on_render: Callable[[], object] = lambda: None,
) -> list[Sample]:
    """``count`` nadir renders at 100 m over sites with exposed soil, at ``gsd_m``."""
    base = camera_preset("m3e")
    camera = camera_preset("m3e", min(1.0, base.gsd_m(100.0) / gsd_m))
    problem_sites = {p.site_id for p in district.patches if p.gt_class.label == "exposed_soil"}
    sites = [s for s in district.sites if s.site_id in problem_sites] or list(district.sites)
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        site = sites[index % len(sites)]
        centre = site.geometry.centroid
        pose = pose_at(
            district,
            centre.x + rng.normal(0, 20),
            centre.y + rng.normal(0, 20),
            100.0,
            gimbal_yaw_deg=float(rng.uniform(0, 360)),
        )
        rendering = render(district, view_for(district, camera, pose), seed=seed + index)
        vegetation = np.isin(rendering.kind_mask, [int(k) for k in VEGETATION_KINDS])
        soil = rendering.class_mask == int(GroundTruthClass.EXPOSED_SOIL)
        samples.append(
            Sample(
                f"{site.site_id}-{index}",
                rendering.bgr,
                {"exposed_soil": soil, "vegetation": vegetation},
                other=~(soil | vegetation),
            )
        )
        on_render()
    return samples


def _lab(image_bgr: UInt8Image) -> NDArray[np.float32]:
    """CIE Lab with L in 0..100 and a, b around 0."""
    lab = cv2.cvtColor(image_bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    return np.asarray(lab, dtype=np.float32)


def _spectrum_slope(luminance: NDArray[np.float32], mask: BoolImage, gsd_m: float) -> float | None:
    """Log-log slope of the radially averaged power spectrum of 32x32 windows inside ``mask``."""
    size = 32
    height, width = mask.shape
    spectra = []
    for y in range(0, height - size + 1, size // 2):
        for x in range(0, width - size + 1, size // 2):
            if mask[y : y + size, x : x + size].mean() < 0.98:
                continue
            window = luminance[y : y + size, x : x + size]
            window = (window - window.mean()) * np.outer(np.hanning(size), np.hanning(size))
            spectra.append(np.abs(np.fft.fftshift(np.fft.fft2(window))) ** 2)
    if not spectra:
        return None
    power = np.mean(spectra, axis=0)
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    radius = np.hypot(xx, yy)
    # Wavelengths from 4 m down to 0.5 m: radii size*gsd/4 .. size*gsd/0.5.
    low, high = size * gsd_m / 4.0, min(size * gsd_m / 0.5, size / 2 - 1)
    radii = np.arange(max(1, math.ceil(low)), math.floor(high) + 1)
    if len(radii) < 3:
        return None
    profile = np.array([power[(radius >= r - 0.5) & (radius < r + 0.5)].mean() for r in radii])
    slope = np.polyfit(np.log(radii), np.log(profile + 1e-12), 1)[0]
    return float(slope)


def region_statistics(samples: Sequence[Sample], gsd_m: float = COMPARE_GSD_M) -> dict[str, float]:
    """The statistics of the module docstring, pooled over ``samples``."""
    stats: dict[str, float] = {}
    pooled: dict[str, list[NDArray[np.float32]]] = {k: [] for k in REGION_KINDS}
    gradients: dict[str, list[NDArray[np.float32]]] = {k: [] for k in REGION_KINDS}
    slopes: dict[str, list[float]] = {k: [] for k in REGION_KINDS}
    widths: list[float] = []
    for sample in samples:
        lab = _lab(sample.bgr)
        luminance = np.ascontiguousarray(lab[:, :, 0])
        gx = cv2.Sobel(luminance, cv2.CV_32F, 1, 0, ksize=3) / (8.0 * gsd_m)
        gy = cv2.Sobel(luminance, cv2.CV_32F, 0, 1, ksize=3) / (8.0 * gsd_m)
        magnitude = np.hypot(gx, gy)
        for kind in REGION_KINDS:
            inner = cv2.erode(sample.regions[kind].astype(np.uint8), np.ones((5, 5), np.uint8))
            if inner.sum() < 50:
                continue
            pooled[kind].append(lab[inner.astype(bool)])
            gradients[kind].append(magnitude[inner.astype(bool)])
            slope = _spectrum_slope(luminance, inner.astype(bool), gsd_m)
            if slope is not None:
                slopes[kind].append(slope)
        width = _edge_width(luminance, magnitude, sample.regions, sample.other, gsd_m)
        if width is not None:
            widths.append(width)
    for kind in REGION_KINDS:
        if not pooled[kind]:
            continue
        values = np.concatenate(pooled[kind])
        for channel, name in enumerate("Lab"):
            stats[f"{kind} {name} mean"] = float(values[:, channel].mean())
            stats[f"{kind} {name} spread"] = float(values[:, channel].std())
        grad = np.concatenate(gradients[kind])
        stats[f"{kind} gradient median /m"] = float(np.median(grad))
        stats[f"{kind} gradient p90 /m"] = float(np.percentile(grad, 90))
        if slopes[kind]:
            stats[f"{kind} spectrum slope"] = float(np.median(slopes[kind]))
    if widths:
        stats["soil-vegetation edge width m"] = float(np.median(widths))
    return stats


def _edge_width(
    luminance: NDArray[np.float32],
    magnitude: NDArray[np.float32],
    regions: dict[str, BoolImage],
    other: BoolImage | None,
    gsd_m: float,
) -> float | None:
    """L contrast of soil against vegetation over the steepest gradients where they meet,
    away from ``other`` surfaces (two pixels: the Sobel gradient's reach and one more)."""
    soil, vegetation = regions["exposed_soil"], regions["vegetation"]
    if soil.sum() < 50 or vegetation.sum() < 50:
        return None
    reach = max(1, round(1.5 / gsd_m))
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    near_soil = cv2.dilate(soil.astype(np.uint8), kernel).astype(bool)
    near_vegetation = cv2.dilate(vegetation.astype(np.uint8), kernel).astype(bool)
    band = near_soil & near_vegetation
    if other is not None:
        band &= ~cv2.dilate(other.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if band.sum() < 20:
        return None
    contrast = abs(float(luminance[soil].mean()) - float(luminance[vegetation].mean()))
    steepest = float(np.percentile(magnitude[band], 95))
    if steepest <= 0:
        return None
    return contrast / steepest


def contact_sheet(
    real: Sequence[Sample], renders: Sequence[Sample], tile_px: int = 360
) -> UInt8Image:
    """Rows of real photos above rows of renders, each cut to a ``tile_px`` square."""

    def square(image: UInt8Image) -> UInt8Image:
        side = min(image.shape[:2])
        y0 = (image.shape[0] - side) // 2
        x0 = (image.shape[1] - side) // 2
        cut = image[y0 : y0 + side, x0 : x0 + side]
        return np.asarray(cv2.resize(cut, (tile_px, tile_px)), dtype=np.uint8)

    columns = max(len(real), len(renders), 1)
    rows = []
    for group, label in ((real, "real"), (renders, "render")):
        tiles = [square(s.bgr) for s in group]
        tiles += [np.zeros((tile_px, tile_px, 3), np.uint8)] * (columns - len(tiles))
        row = np.hstack(tiles)
        cv2.putText(row, label, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
        rows.append(row)
    return np.vstack(rows)


@dataclass(frozen=True, slots=True)
class Comparison:
    real: dict[str, float]
    rendered: dict[str, float]
    conditions: str = ""  # the rendered district's weather and camera style

    def rows(self) -> list[tuple[str, float, float, float | None]]:
        """(statistic, real, rendered, relative difference) for every statistic of both."""
        out = []
        for name in sorted(set(self.real) & set(self.rendered)):
            r, s = self.real[name], self.rendered[name]
            relative = abs(s - r) / abs(r) if abs(r) > 1e-6 else None
            out.append((name, r, s, relative))
        return out

    def markdown(self, bound: float = 0.25) -> str:
        lines = [f"Renders: {self.conditions}", ""] if self.conditions else []
        lines += [
            "| statistic | real | render | difference | within 25 % |",
            "|---|---:|---:|---:|:---:|",
        ]
        for name, r, s, relative in self.rows():
            within = "" if relative is None else ("yes" if relative <= bound else "no")
            shown = "n/a" if relative is None else f"{relative:.0%}"
            lines.append(f"| {name} | {r:.3f} | {s:.3f} | {shown} | {within} |")
        return "\n".join(lines) + "\n"


def describe_conditions(district: District) -> str:
    """The district's weather and camera style in a line: the statistics compare materials
    only when these are like the real photos' (summer, clear air, a neutral camera)."""
    env = district.environment
    return (
        f"district seed {district.params.seed}, {env.season.value}, haze "
        f"{env.haze_per_m:.4f}/m, sun {env.sun_elevation_deg:.0f} deg high, saturation "
        f"{env.saturation:.2f}, contrast {env.contrast:.2f}, warmth {env.warmth:+.2f}, overcast "
        f"{env.overcast:.2f}"
    )


def median_statistics(per_district: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each statistic's median over districts (over those that have it)."""
    names = sorted({name for stats in per_district for name in stats})
    return {
        name: float(np.median([stats[name] for stats in per_district if name in stats]))
        for name in names
    }


def compare(
    real_folder: Path,
    districts: District | Sequence[District],
    out: Path,
    count: int = 8,
    on_render: Callable[[], object] = lambda: None,
) -> Comparison:
    """Write ``contact_sheet.png``, ``statistics.md`` and ``statistics.json`` into ``out``.

    With several districts, ``count`` renders of each and the median of each statistic over
    the districts: the renders' weather and picture style are drawn per district, so one
    district's table measures its day as much as the materials (the sheet shows the first
    district's renders)."""
    out.mkdir(parents=True, exist_ok=True)
    real = real_samples(real_folder)
    chosen = [districts] if isinstance(districts, District) else list(districts)
    if not chosen:
        raise SimError("compare needs at least one district")
    rendered = [render_samples(d, count, on_render=on_render) for d in chosen]
    if len(chosen) == 1:
        statistics, conditions = region_statistics(rendered[0]), describe_conditions(chosen[0])
    else:
        statistics = median_statistics([region_statistics(r) for r in rendered])
        seeds = ", ".join(str(d.params.seed) for d in chosen)
        conditions = f"median over {len(chosen)} districts (seeds {seeds}), {count} renders each"
    renders = rendered[0]
    comparison = Comparison(region_statistics(real), statistics, conditions)
    if not cv2.imwrite(str(out / "contact_sheet.png"), contact_sheet(real, renders)):
        raise SimError(f"could not write {out / 'contact_sheet.png'}")
    (out / "statistics.md").write_text(comparison.markdown(), encoding="utf-8")
    (out / "statistics.json").write_text(
        json.dumps({"real": comparison.real, "rendered": comparison.rendered}, indent=2),
        encoding="utf-8",
    )
    return comparison
