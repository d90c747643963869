"""Simulated frames: exact geometry, metadata that independent readers agree with, noise."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from sim.camera import GNSS_STD_M, PoseNoise, camera_preset
from sim.errors import SimError
from sim.kinds import GnssMode, GroundTruthClass
from sim.shots import pose_at, shoot, view_for
from sim.world import District
from tests.sim.reference import cast_pixels, dms_to_degrees, read_back

SMALL = camera_preset("m3e", 0.12)  # 634 x 475 px: fast, same geometry as the full camera


def nadir_over_first_problem_site(district: District) -> tuple[float, float]:
    site = next(s for s in district.sites if not s.compliant)
    centre = site.geometry.centroid
    return centre.x, centre.y


def test_same_inputs_give_byte_identical_jpegs(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    pose = pose_at(district, east, north, 100.0, gimbal_yaw_deg=15.0)
    first = shoot(district, pose, SMALL, PoseNoise(), seed=3)
    second = shoot(district, pose, SMALL, PoseNoise(), seed=3)
    assert first.jpeg == second.jpeg
    assert np.array_equal(first.class_mask, second.class_mask)


def test_other_seed_gives_other_noise_but_the_same_scene(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    pose = pose_at(district, east, north, 100.0)
    first = shoot(district, pose, SMALL, PoseNoise(), seed=3)
    second = shoot(district, pose, SMALL, PoseNoise(), seed=4)
    assert first.jpeg != second.jpeg
    assert np.array_equal(first.class_mask, second.class_mask)


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"),
    [(0.0, -90.0, 0.0), (37.0, -90.0, 0.0), (200.0, -55.0, 1.5), (-80.0, -35.0, 0.0)],
)
def test_patch_corners_cast_back_from_metadata_to_within_a_centimetre(
    district: District, yaw: float, pitch: float, roll: float
) -> None:
    east, north = nadir_over_first_problem_site(district)
    back = 100.0 / math.tan(math.radians(-pitch)) if pitch > -89.0 else 0.0
    cam_e = east - back * math.sin(math.radians(yaw))
    cam_n = north - back * math.cos(math.radians(yaw))
    pose = pose_at(
        district,
        cam_e,
        cam_n,
        100.0,
        gimbal_yaw_deg=yaw,
        gimbal_pitch_deg=pitch,
        gimbal_roll_deg=roll,
    )
    shot = shoot(district, pose, SMALL, PoseNoise(GnssMode.PERFECT), seed=1)
    view = view_for(district, SMALL, shot.true_pose)
    corners = np.array(
        [
            c
            for patch in district.patches
            for c in _exterior_coords(patch.geometry)
            if shot.footprint_utm.buffer(-1.0).contains(_point(c))
        ]
    )
    assert len(corners) >= 8, "the frame should see several patch corners"
    pixels = view.ground_to_pixel(corners)
    recovered, epsg = cast_pixels(shot.jpeg, pixels)
    assert epsg == district.crs.to_epsg()
    errors = np.hypot(*(recovered - corners).T)
    assert errors.max() < 0.01


def test_rendered_mask_agrees_with_projected_patches(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    camera = camera_preset("m3e", 0.25)
    shot = shoot(
        district,
        pose_at(district, east, north, 100.0, gimbal_yaw_deg=25.0),
        camera,
        PoseNoise(GnssMode.PERFECT),
    )
    view = view_for(district, camera, shot.true_pose)
    frame = Polygon(
        [
            (0, 0),
            (camera.width_px - 1, 0),
            (camera.width_px - 1, camera.height_px - 1),
            (0, camera.height_px - 1),
        ]
    )
    checked = 0
    for patch in district.patches:
        inside = patch.geometry.intersection(shot.footprint_utm)
        if inside.is_empty or inside.area < 30.0:
            continue
        polygon = max(getattr(inside, "geoms", [inside]), key=lambda g: g.area)
        projected = Polygon(
            view.ground_to_pixel(np.asarray(polygon.exterior.coords)),
            [view.ground_to_pixel(np.asarray(ring.coords)) for ring in polygon.interiors],
        ).intersection(frame)
        interior = projected.buffer(-2.0)
        if interior.is_empty:
            continue
        samples = np.asarray(interior.representative_point().coords)[0]
        u, v = (round(x) for x in samples)
        assert shot.class_mask[v, u] == patch.gt_class, patch.patch_id
        mask_pixels = projected.area
        counted = _count_class_pixels_in(shot.class_mask, projected.buffer(-1.5), patch.gt_class)
        assert counted >= 0.98 * projected.buffer(-1.5).area - 5, patch.patch_id
        assert mask_pixels > 0
        checked += 1
    assert checked >= 2


def _count_class_pixels_in(mask: np.ndarray, region: Polygon, cls: GroundTruthClass) -> int:
    import cv2

    stencil = np.zeros(mask.shape, dtype=np.uint8)
    polygons = getattr(region, "geoms", [region])
    for polygon in polygons:
        rings = [polygon.exterior, *polygon.interiors]
        cv2.fillPoly(stencil, [np.round(np.asarray(r.coords)).astype(np.int32) for r in rings], 1)
    return int(((mask == int(cls)) & (stencil == 1)).sum())


def _exterior_coords(geometry: object) -> list[tuple[float, float]]:
    polygons = getattr(geometry, "geoms", [geometry])
    return [c for p in polygons for c in list(p.exterior.coords)[:-1]]


def _point(coords: tuple[float, float]) -> Point:
    return Point(coords)


def test_oblique_frame_shows_sky_above_the_horizon(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    shot = shoot(
        district,
        pose_at(district, east, north, 60.0, gimbal_pitch_deg=-8.0),
        SMALL,
        PoseNoise(GnssMode.PERFECT),
    )
    assert (shot.class_mask[0] == 255).all()  # top row: sky
    assert (shot.class_mask[-1] != 255).all()  # bottom row: ground


def test_exif_and_xmp_read_back_with_independent_readers(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    when = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    pose = pose_at(
        district,
        east,
        north,
        98.765,
        gimbal_yaw_deg=-123.4567,
        gimbal_pitch_deg=-75.5,
        time_utc=when,
    )
    shot = shoot(district, pose, SMALL, PoseNoise(GnssMode.RTK_FLOAT), seed=9)
    reported = shot.reported_pose
    meta = read_back(shot.jpeg)
    exif = meta.exif
    assert str(exif["Image Make"]) == "DJI" and str(exif["Image Model"]) == "M3E"
    assert str(exif["EXIF DateTimeOriginal"]) == "2026:05:04 03:02:01"
    focal = exif["EXIF FocalLength"].values[0]
    assert float(focal.num) / float(focal.den) == pytest.approx(12.29)
    lat = dms_to_degrees(exif["GPS GPSLatitude"], exif["GPS GPSLatitudeRef"])
    lon = dms_to_degrees(exif["GPS GPSLongitude"], exif["GPS GPSLongitudeRef"])
    assert lat == pytest.approx(reported.lat_deg, abs=1e-9)
    assert lon == pytest.approx(reported.lon_deg, abs=1e-9)
    altitude = exif["GPS GPSAltitude"].values[0]
    assert float(altitude.num) / float(altitude.den) == pytest.approx(
        reported.altitude_ellipsoid_m, abs=1e-3
    )
    xmp = meta.xmp
    assert float(xmp["RelativeAltitude"]) == pytest.approx(reported.relative_altitude_m, abs=1e-3)
    assert float(xmp["AbsoluteAltitude"]) == pytest.approx(reported.altitude_ellipsoid_m, abs=1e-3)
    assert float(xmp["GimbalYawDegree"]) == pytest.approx(reported.gimbal_yaw_deg, abs=1e-4)
    assert float(xmp["GimbalPitchDegree"]) == pytest.approx(reported.gimbal_pitch_deg, abs=1e-4)
    assert float(xmp["FlightYawDegree"]) == pytest.approx(reported.flight_yaw_deg, abs=1e-4)
    assert float(xmp["GpsLongtitude"]) == pytest.approx(
        reported.lon_deg, abs=1e-9
    )  # DJI's spelling
    assert xmp["RelativeAltitude"].startswith("+")
    assert xmp["RtkFlag"] == "34" and xmp["GpsStatus"] == "RTK"
    assert float(xmp["RtkStdLon"]) == pytest.approx(shot.error.std_lon_m, abs=1e-5)
    assert float(xmp["CalibratedFocalLength"]) == pytest.approx(SMALL.focal_px, abs=1e-6)
    assert float(xmp["CalibratedOpticalCenterX"]) == pytest.approx(SMALL.cx_px, abs=1e-6)
    with Image.open(io.BytesIO(shot.jpeg)) as image:
        assert image.size == (SMALL.width_px, SMALL.height_px)
        assert image.format == "JPEG"


@pytest.mark.parametrize("mode", [GnssMode.RTK_FIXED, GnssMode.RTK_FLOAT, GnssMode.SINGLE])
def test_noise_modes_follow_their_stated_distributions(mode: GnssMode) -> None:
    rng = np.random.default_rng(5)
    noise = PoseNoise(gnss_mode=mode, yaw_std_deg=0.8, tilt_std_deg=0.3)
    errors = [noise.draw(rng) for _ in range(4000)]
    (low, high), _ = GNSS_STD_M[mode]
    stds = np.array([e.std_lon_m for e in errors])
    assert stds.min() >= low and stds.max() <= high
    normalised = np.array(
        [e.east_m / e.std_lon_m for e in errors] + [e.north_m / e.std_lat_m for e in errors]
    )
    assert normalised.std() == pytest.approx(1.0, abs=0.05)
    assert abs(normalised.mean()) < 0.05
    yaw = np.array([e.yaw_deg for e in errors])
    assert yaw.std() == pytest.approx(0.8, rel=0.05)
    assert np.array([e.pitch_deg for e in errors]).std() == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize(
    ("mode", "flag", "status"),
    [
        (GnssMode.RTK_FIXED, "50", "RTK"),
        (GnssMode.RTK_FLOAT, "34", "RTK"),
        (GnssMode.SINGLE, "16", "Normal"),
    ],
)
def test_metadata_position_differs_from_truth_by_the_drawn_error(
    district: District, mode: GnssMode, flag: str, status: str
) -> None:
    east, north = nadir_over_first_problem_site(district)
    shot = shoot(district, pose_at(district, east, north, 100.0), SMALL, PoseNoise(mode), seed=21)
    meta = read_back(shot.jpeg)
    assert meta.xmp["RtkFlag"] == flag and meta.xmp["GpsStatus"] == status
    lat = dms_to_degrees(meta.exif["GPS GPSLatitude"], meta.exif["GPS GPSLatitudeRef"])
    lon = dms_to_degrees(meta.exif["GPS GPSLongitude"], meta.exif["GPS GPSLongitudeRef"])
    to_utm = Transformer.from_crs("EPSG:4326", district.crs, always_xy=True)
    reported_e, reported_n = to_utm.transform(lon, lat)
    true_e, true_n = to_utm.transform(shot.true_pose.lon_deg, shot.true_pose.lat_deg)
    assert reported_e - true_e == pytest.approx(shot.error.east_m, abs=2e-3)
    assert reported_n - true_n == pytest.approx(shot.error.north_m, abs=2e-3)
    yaw_error = float(meta.xmp["GimbalYawDegree"]) - shot.true_pose.gimbal_yaw_deg
    assert yaw_error == pytest.approx(shot.error.yaw_deg, abs=2e-4)


def test_camera_presets_and_scaling() -> None:
    full = camera_preset("m3e")
    assert full.width_px * full.height_px > 20e6
    assert full.gsd_m(100.0) == pytest.approx(0.027, abs=0.001)
    half = camera_preset("m3e", 0.5)
    assert (half.width_px, half.height_px) == (2640, 1978)
    assert half.focal_px == pytest.approx(full.focal_px / 2)
    small = camera_preset("m30_wide")
    assert small.width_px * small.height_px == 12_000_000


@pytest.mark.parametrize("pitch_deg", [0.0, 5.0, -95.0])
def test_impossible_gimbal_pitch_is_refused(district: District, pitch_deg: float) -> None:
    east, north = nadir_over_first_problem_site(district)
    with pytest.raises(SimError, match="gimbal pitch"):
        shoot(district, pose_at(district, east, north, 100.0, gimbal_pitch_deg=pitch_deg), SMALL)


def test_camera_below_ground_is_refused(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    with pytest.raises(SimError, match="above ground"):
        shoot(district, pose_at(district, east, north, 0.2), SMALL)


def test_unknown_camera_and_bad_scale_are_refused() -> None:
    with pytest.raises(SimError, match="unknown camera preset 'phantom'"):
        camera_preset("phantom")
    with pytest.raises(SimError, match="scale"):
        camera_preset("m3e", 2.0)


def test_casting_a_sky_pixel_is_refused(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    pose = pose_at(district, east, north, 60.0, gimbal_pitch_deg=-8.0)
    view = view_for(district, SMALL, pose)
    with pytest.raises(SimError, match="horizon"):
        view.pixel_to_ground(np.array([[SMALL.width_px / 2, 0.0]]))


def test_negative_seed_is_refused(district: District) -> None:
    east, north = nadir_over_first_problem_site(district)
    with pytest.raises(SimError, match="non-negative"):
        shoot(district, pose_at(district, east, north, 100.0), SMALL, seed=-1)


def test_lens_distortion_round_trips_through_the_xmp_and_geo(district: District) -> None:
    from geo.frames import read_frame_meta
    from geo.georef import intrinsics_from_meta, pixel_to_ground, pose_from_meta

    camera = camera_preset("m3e", 0.25)
    east, north = nadir_over_first_problem_site(district)
    shot = shoot(
        district,
        pose_at(district, east, north, 100.0, gimbal_yaw_deg=40.0),
        camera,
        PoseNoise(GnssMode.PERFECT),
    )
    meta = read_frame_meta(shot.jpeg)
    assert meta.distortion == pytest.approx(camera.distortion, abs=1e-9)
    intrinsics = intrinsics_from_meta(meta)
    pose = pose_from_meta(meta, crs=district.crs)
    # Corners and edges of the frame, where a 24 mm lens bends most (tens of pixels here).
    w, h = camera.width_px - 1, camera.height_px - 1
    pixels = np.array([[0, 0], [w, 0], [w, h], [0, h], [w / 2, 0], [0, h / 2], [w / 2, h / 2]])
    view = view_for(district, camera, shot.true_pose)
    truth = view.pixel_to_ground(pixels)
    cast = pixel_to_ground(pixels, intrinsics, pose).points
    assert np.hypot(*(cast - truth).T).max() < 0.01
    # Ignoring the distortion would put the corners metres off.
    pinhole = intrinsics_from_meta(meta).__class__(
        intrinsics.width_px,
        intrinsics.height_px,
        intrinsics.focal_px,
        intrinsics.cx_px,
        intrinsics.cy_px,
    )
    assert np.hypot(*(pixel_to_ground(pixels, pinhole, pose).points - truth).T).max() > 1.0


def test_straight_ground_edges_bend_in_a_distorted_frame(district: District) -> None:
    camera = camera_preset("m3e", 0.25)
    view = view_for(
        district, camera, pose_at(district, *nadir_over_first_problem_site(district), 100.0)
    )
    centre = np.asarray(view.centre_utm)
    # A straight ground line across the top of the frame: its middle bows towards the centre
    # less than its ends (barrel distortion pulls the ends in).
    line = centre + np.column_stack([np.linspace(-60, 60, 3), np.full(3, 40.0)])
    pixels = view.ground_to_pixel(line)
    middle_offset = pixels[1, 1] - (pixels[0, 1] + pixels[2, 1]) / 2
    assert abs(middle_offset) > 2.0
