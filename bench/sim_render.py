"""Seconds per rendered frame of the simulated district (render, JPEG encode, EXIF/XMP)."""

from __future__ import annotations

from bench.results import BenchResult, measure
from sim.camera import CameraModel, Pose, PoseNoise, camera_preset
from sim.render import render
from sim.shots import pose_at, shoot, view_for
from sim.world import District, generate_district

TARGET_20MP_S = 1.0


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


def run(quick: bool = False) -> list[BenchResult]:
    district = generate_district(7)
    runs = 3 if quick else 8
    return [
        *_cases(district, camera_preset("m3e"), "20 MP (m3e)", runs, TARGET_20MP_S),
        *_cases(district, camera_preset("m3e", 0.5), "5 MP (m3e x0.5)", runs, None),
    ]
