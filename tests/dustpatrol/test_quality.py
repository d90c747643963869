"""Frame quality checks: each bad frame is kept out of detection with its reason."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import Point

from dustpatrol.pipeline import analyze_frames
from dustpatrol.quality import FrameQuality, horizon_in_view, image_stats
from dustpatrol.settings import QualitySettings
from geo.frames import read_frame_meta
from geo.georef import footprint, intrinsics_from_meta, pose_from_meta
from geo.sites import load_sites
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District, generate_district
from vision.detect import Detector

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "dustpatrol-seg.onnx"


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> tuple[District, Path]:
    folder = tmp_path_factory.mktemp("world")
    world = generate_district(9002, n_sites=10, extent_m=3_000.0)
    write_district(world, folder)
    return world, folder / "sites.geojson"


def _frame(
    district: District,
    folder: Path,
    name: str,
    east: float,
    north: float,
    gimbal_pitch_deg: float = -90.0,
) -> Path:
    shot = shoot(
        district,
        pose_at(district, east, north, 100.0, gimbal_pitch_deg=gimbal_pitch_deg),
        camera_preset("m3e", 0.25),
        PoseNoise(GnssMode.RTK_FIXED),
    )
    path = folder / name
    path.write_bytes(shot.jpeg)
    return path


def _rewrite_pixels(path: Path, change: object) -> None:
    """Apply ``change`` to the pixels and keep the EXIF/XMP (the metadata stays valid)."""
    with Image.open(path) as image:
        exif = image.info.get("exif", b"")
        xmp = image.info.get("xmp", b"")
        pixels = np.asarray(image.convert("RGB"))
    changed = change(pixels)  # type: ignore[operator]
    buffer = io.BytesIO()
    Image.fromarray(changed).save(buffer, "JPEG", quality=92, exif=exif, xmp=xmp)
    path.write_bytes(buffer.getvalue())


def test_bad_frames_are_rejected_with_their_reason(
    district: tuple[District, Path], tmp_path: Path
) -> None:
    world, sites_file = district
    site = world.sites[0].geometry.centroid
    good = _frame(world, tmp_path, "DJI_0001.jpg", site.x, site.y)
    blurred = _frame(world, tmp_path, "DJI_0002.jpg", site.x + 20, site.y)
    _rewrite_pixels(blurred, lambda p: cv2.GaussianBlur(p, (0, 0), 6))
    dark = _frame(world, tmp_path, "DJI_0003.jpg", site.x - 20, site.y)
    _rewrite_pixels(dark, lambda p: (p * 0.04).astype(np.uint8))
    duplicate = tmp_path / "DJI_0004.jpg"
    duplicate.write_bytes(good.read_bytes())
    # far out in the countryside: the corner of the district, away from every site
    min_e, min_n, _, _ = world.bounds
    far = _frame(world, tmp_path, "DJI_0005.jpg", min_e + 150, min_n + 150)
    horizon = _frame(world, tmp_path, "DJI_0006.jpg", site.x, site.y - 40, gimbal_pitch_deg=-30.0)
    oblique = _frame(world, tmp_path, "DJI_0007.jpg", site.x, site.y - 60, gimbal_pitch_deg=-50.0)

    registry = load_sites(sites_file).sites
    assert not any(registry.to_crs(world.crs).distance(Point(min_e + 150, min_n + 150)) < 300), (
        "the test needs a frame far from every site"
    )
    result = analyze_frames(
        [good, blurred, dark, duplicate, far, horizon, oblique], registry, Detector(MODEL)
    )
    reasons = {r.frame_id: r.reason for r in result.rejected}
    assert result.frames_analysed == 1, reasons
    assert "blurred" in reasons["DJI_0002.jpg"]
    assert "too dark" in reasons["DJI_0003.jpg"]
    assert "same file" in reasons["DJI_0004.jpg"] or "duplicate" in reasons["DJI_0004.jpg"]
    assert "far from every site" in reasons["DJI_0005.jpg"]
    assert "horizon" in reasons["DJI_0006.jpg"]
    assert "off nadir" in reasons["DJI_0007.jpg"]
    # an oblique check flight raises the limit and its frames are analysed
    again = analyze_frames(
        [oblique], registry, Detector(MODEL), quality=QualitySettings(max_off_nadir_deg=60)
    )
    assert again.frames_analysed == 1, again.rejected


def test_sharpness_falls_with_blur_and_a_lens_cap_is_featureless(
    district: tuple[District, Path], tmp_path: Path
) -> None:
    world, _ = district
    site = world.sites[1].geometry.centroid
    path = _frame(world, tmp_path, "f.jpg", site.x, site.y)
    sharp = image_stats(path)
    _rewrite_pixels(path, lambda p: cv2.GaussianBlur(p, (0, 0), 2))
    soft = image_stats(path)
    assert soft.sharpness < sharp.sharpness / 3
    _rewrite_pixels(path, lambda p: np.full_like(p, 90))
    capped = FrameQuality(QualitySettings()).image_problem(path)
    assert capped is not None and "featureless" in capped


def test_the_horizon_check_follows_the_field_of_view(
    district: tuple[District, Path], tmp_path: Path
) -> None:
    world, _ = district
    site = world.sites[2].geometry.centroid
    path = _frame(world, tmp_path, "f.jpg", site.x, site.y, gimbal_pitch_deg=-70.0)
    meta = read_frame_meta(path)
    camera = intrinsics_from_meta(meta)
    pose = pose_from_meta(meta)
    half_vertical = math.degrees(math.atan(camera.height_px / 2 / camera.focal_px))
    assert not horizon_in_view(camera, pose)
    assert footprint(camera, pose).area > 0
    # the same camera pitched so that its top edge just reaches above the horizon
    raised = replace(pose, pitch_deg=-half_vertical + 1.0)
    assert horizon_in_view(camera, raised)


def test_a_site_seen_in_part_is_not_inspected_rather_than_compliant() -> None:
    from pyproj import CRS
    from shapely.geometry import box

    from dustpatrol.pipeline import site_status
    from geo.matching import Finding, SiteCoverage

    half = SiteCoverage("S1", 1000.0, 500.0, 0.0, 0.0)
    whole = SiteCoverage("S1", 1000.0, 995.0, 0.0, 0.0)
    assert site_status(half, [], 0.9) == "not inspected"
    assert site_status(whole, [], 0.9) == "compliant"
    soil = Finding("S1", "exposed_soil", box(0, 0, 5, 5), CRS.from_epsg(32650), 25.0, 0.9, 1.0, ())
    net = Finding("S1", "covered_soil", box(0, 0, 5, 5), CRS.from_epsg(32650), 25.0, 0.9, 1.0, ())
    assert site_status(half, [soil], 0.9) == "problems"  # what was seen is enough for a notice
    assert site_status(whole, [net], 0.9) == "compliant"
