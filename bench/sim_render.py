"""Seconds per rendered frame of the simulated district (render, JPEG encode, EXIF/XMP)."""

from __future__ import annotations

from pathlib import Path

from bench.results import BenchResult, measure
from sim.camera import CameraModel, Pose, PoseNoise, camera_preset
from sim.compare import compare
from sim.render import render
from sim.shots import pose_at, shoot, view_for
from sim.world import District, generate_district

TARGET_20MP_S = 1.5
TARGET_TRAINING_S = 0.3
REAL_REFERENCE = Path("tests/vision/data/real_reference")


def _pose(district: District, i: int) -> Pose:
    centre = district.sites[i % len(district.sites)].geometry.centroid
    return pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=17.0 * i)


def _cases(
    district: District, camera: CameraModel, label: str, runs: int, target: float | None
) -> list[BenchResult]:
    def frame(i: int) -> None:
        shoot(district, _pose(district, i), camera, PoseNoise(), seed=i)

    def render_only(i: int) -> None:
        render(district, view_for(district, camera, _pose(district, i)), seed=i)

    size = f"{camera.width_px}x{camera.height_px}, nadir at 100 m over sites"
    return [
        measure("sim", f"frame {label}", frame, runs, target_s=target, note=size),
        measure("sim", f"render only {label}", render_only, runs, note="without JPEG encoding"),
    ]


# Districts of every season and picture style: their median is the realism measure (one
# district's table measures its day as much as the materials).
REALISM_SEEDS = tuple(range(78, 88))


def _realism(quick: bool) -> list[BenchResult]:
    """`sim compare` against the real reference photos, median over districts: relative
    difference per statistic."""
    seeds = REALISM_SEEDS[:4] if quick else REALISM_SEEDS
    districts = [generate_district(seed, n_sites=10, extent_m=2_000.0) for seed in seeds]
    comparison = compare(REAL_REFERENCE, districts, Path("var/bench/compare"), 2 if quick else 3)
    rows = []
    for name, real, rendered, relative in comparison.rows():
        if relative is None:
            continue
        rows.append(
            BenchResult(
                "sim",
                f"realism: {name}",
                "ratio",
                relative,
                relative,
                relative,
                1,
                "< 0.25",
                relative < 0.25,
                f"real {real:.2f}, render median {rendered:.2f} ({len(seeds)} districts)",
            )
        )
    return rows


def run(quick: bool = False) -> list[BenchResult]:
    district = generate_district(7)
    runs = 3 if quick else 8
    return [
        *_cases(district, camera_preset("m3e"), "20 MP (m3e)", runs, TARGET_20MP_S),
        *_cases(district, camera_preset("m3e", 0.5), "5 MP (m3e x0.5)", runs, None),
        # What training renders: about 1.4 MP, 10 cm per pixel at 100 m.
        *_cases(
            district, camera_preset("m3e", 0.27), "1.4 MP (training size)", runs, TARGET_TRAINING_S
        ),
        *_realism(quick),
    ]
