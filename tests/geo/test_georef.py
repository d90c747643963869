"""geo.georef: exact on perfect metadata, honest uncertainty under RTK noise, clear refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import CRS
from shapely.geometry import Polygon

from geo.frames import read_frame_meta
from geo.georef import (
    MEDIAN_PER_SIGMA,
    RADIUS_95_PER_SIGMA,
    CameraIntrinsics,
    CameraPose,
    GeorefError,
    footprint,
    georeference_polygon,
    ground_to_pixel,
    intrinsics_from_meta,
    pixel_to_ground,
    pose_from_meta,
)
from sim.camera import PoseNoise, camera_preset
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot, view_for
from sim.world import District
from tests.geo.frame_fixtures import make_jpeg, standard_gps, xmp_attributes

CAMERA = camera_preset("m3e", 0.12)
CORNERS = np.array(
    [
        [0, 0],
        [CAMERA.width_px - 1, 0],
        [CAMERA.width_px - 1, CAMERA.height_px - 1],
        [0, CAMERA.height_px - 1],
    ],
    dtype=float,
)


@pytest.mark.parametrize(
    ("yaw", "pitch"), [(0.0, -90.0), (63.0, -90.0), (-140.0, -60.0), (15.0, -35.0)]
)
def test_perfect_metadata_places_pixels_within_a_centimetre(
    district: District, yaw: float, pitch: float
) -> None:
    centre = district.sites[1].geometry.centroid
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 95.0, gimbal_yaw_deg=yaw, gimbal_pitch_deg=pitch),
        CAMERA,
        PoseNoise(GnssMode.PERFECT),
    )
    meta = read_frame_meta(shot.jpeg)
    pose = pose_from_meta(meta, crs=district.crs)
    pixels = np.array(
        [
            [10.5, CAMERA.height_px - 5.0],
            [CAMERA.width_px / 2, CAMERA.height_px / 2],
            [300.0, 400.0],
        ]
    )
    placed = pixel_to_ground(pixels, intrinsics_from_meta(meta), pose)
    truth = view_for(district, CAMERA, shot.true_pose).pixel_to_ground(pixels)
    assert np.hypot(*(placed.points - truth).T).max() < 0.01


def test_ground_truth_patch_recovered_from_its_mask_outline(district: District) -> None:
    """A patch's pixel outline, cast back with metadata only, lands on the patch."""
    patch = max(district.patches, key=lambda p: p.area_m2)
    centre = patch.geometry.representative_point()
    shot = shoot(
        district, pose_at(district, centre.x, centre.y, 100.0), CAMERA, PoseNoise(GnssMode.PERFECT)
    )
    view = view_for(district, CAMERA, shot.true_pose)
    visible = patch.geometry.intersection(shot.footprint_utm)
    polygon = max(getattr(visible, "geoms", [visible]), key=lambda g: g.area)
    outline_px = view.ground_to_pixel(np.asarray(polygon.exterior.coords))
    meta = read_frame_meta(shot.jpeg)
    placed = georeference_polygon(
        outline_px, intrinsics_from_meta(meta), pose_from_meta(meta, crs=district.crs)
    )
    shell = Polygon(polygon.exterior)
    assert placed.polygon.symmetric_difference(shell).area < 0.05
    assert placed.polygon.area == pytest.approx(shell.area, rel=1e-4)
    assert placed.crs == district.crs


def test_rtk_fixed_corner_errors_match_the_uncertainty_model(district: District) -> None:
    centre = district.sites[2].geometry.centroid
    errors: list[float] = []
    sigmas: list[float] = []
    radii: list[float] = []
    for i in range(60):
        shot = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=6.0 * i),
            CAMERA,
            PoseNoise(GnssMode.RTK_FIXED, yaw_std_deg=0.5, tilt_std_deg=0.2),
            seed=i,
        )
        meta = read_frame_meta(shot.jpeg)
        placed = pixel_to_ground(
            CORNERS,
            intrinsics_from_meta(meta),
            pose_from_meta(meta, yaw_std_deg=0.5, tilt_std_deg=0.2, crs=district.crs),
        )
        truth = view_for(district, CAMERA, shot.true_pose).pixel_to_ground(CORNERS)
        errors.extend(np.hypot(*(placed.points - truth).T))
        radii.extend(placed.uncertainty_m)
        sigmas.extend(placed.uncertainty_m / RADIUS_95_PER_SIGMA)
    errors_a, radii_a = np.array(errors), np.array(radii)
    predicted_median = MEDIAN_PER_SIGMA * float(np.median(sigmas))
    assert 0.7 * predicted_median < float(np.median(errors_a)) < 1.2 * predicted_median
    inside = float((errors_a <= radii_a).mean())
    assert 0.9 <= inside <= 1.0


def test_uncertainty_grows_towards_the_frame_edge_and_with_worse_gnss() -> None:
    camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    crs = CRS.from_epsg(32650)
    fixed = CameraPose(crs, 500000.0, 4000000.0, 100.0, 0.0, -90.0, 0.0, 0.02, 0.03, 0.5, 0.2)
    single = CameraPose(crs, 500000.0, 4000000.0, 100.0, 0.0, -90.0, 0.0, 3.0, 5.0, 0.5, 0.2)
    points = np.array([[499.5, 374.5], [0.0, 0.0]])
    near, corner = pixel_to_ground(points, camera, fixed).uncertainty_m
    assert corner > near
    assert pixel_to_ground(points, camera, single).uncertainty_m[0] > 5.0


def test_nadir_pixel_centre_lands_below_the_camera() -> None:
    camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    pose = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 100.0, 30.0, -90.0, 0.0)
    placed = pixel_to_ground(np.array([[499.5, 374.5], [499.5, 0.0]]), camera, pose)
    assert placed.points[0] == pytest.approx([500000.0, 4000000.0])
    # The top edge of a nadir image points along the yaw (30° east of north).
    east, north = placed.points[1] - placed.points[0]
    assert math.degrees(math.atan2(east, north)) == pytest.approx(30.0)
    assert math.hypot(east, north) == pytest.approx(100.0 * 374.5 / 700.0)


def test_ground_above_the_take_off_point_shortens_the_cast() -> None:
    camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    pose = CameraPose(CRS.from_epsg(32650), 0.0 + 500000, 4000000.0, 100.0, 0.0, -90.0, 0.0)
    low = pixel_to_ground(np.array([[0.0, 0.0]]), camera, pose, 0.0).points[0]
    high = pixel_to_ground(np.array([[0.0, 0.0]]), camera, pose, 20.0).points[0]
    assert np.hypot(*(high - [500000, 4000000])) == pytest.approx(
        0.8 * np.hypot(*(low - [500000, 4000000]))
    )


def test_rays_above_the_horizon_are_refused() -> None:
    camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    pose = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 60.0, 0.0, -10.0, 0.0)
    with pytest.raises(GeorefError, match="above the horizon"):
        pixel_to_ground(np.array([[499.5, 0.0]]), camera, pose)


def test_oblique_footprint_is_cut_at_the_maximum_range() -> None:
    camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    pose = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 60.0, 0.0, -10.0, 0.0)
    polygon = footprint(camera, pose, max_range_m=800.0)
    assert polygon.is_valid and polygon.area > 0
    far = max(np.hypot(x - 500000.0, y - 4000000.0) for x, y in polygon.exterior.coords)
    assert far == pytest.approx(800.0, rel=1e-6)


def test_nadir_footprint_matches_the_rendered_footprint(district: District) -> None:
    centre = district.sites[0].geometry.centroid
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=20.0),
        CAMERA,
        PoseNoise(GnssMode.PERFECT),
    )
    meta = read_frame_meta(shot.jpeg)
    polygon = footprint(intrinsics_from_meta(meta), pose_from_meta(meta, crs=district.crs))
    assert polygon.symmetric_difference(shot.footprint_utm).area < 0.01 * polygon.area


def test_geographic_crs_is_refused_for_a_pose() -> None:
    with pytest.raises(GeorefError, match="projected"):
        CameraPose(CRS.from_epsg(4326), 115.0, 36.0, 100.0, 0.0, -90.0, 0.0)


def test_frame_without_relative_altitude_cannot_be_placed() -> None:
    meta = read_frame_meta(
        make_jpeg(gps=standard_gps(), xmp=xmp_attributes({"GimbalYawDegree": "+1"}))
    )
    with pytest.raises(GeorefError, match="RelativeAltitude"):
        pose_from_meta(meta)


def test_frame_without_orientation_cannot_be_placed() -> None:
    meta = read_frame_meta(
        make_jpeg(gps=standard_gps(), xmp=xmp_attributes({"RelativeAltitude": "+80"}))
    )
    with pytest.raises(GeorefError, match="orientation is unknown"):
        pose_from_meta(meta)


def test_fixed_nadir_camera_uses_the_flight_heading() -> None:
    xmp = xmp_attributes({"RelativeAltitude": "+80", "FlightYawDegree": "+45.0"})
    pose = pose_from_meta(read_frame_meta(make_jpeg(gps=standard_gps(), xmp=xmp)))
    assert (pose.yaw_deg, pose.pitch_deg) == (45.0, -90.0)
    assert pose.crs.to_epsg() == 32650


def test_intrinsics_fall_back_to_the_model_preset() -> None:
    meta = read_frame_meta(make_jpeg(gps=standard_gps(), size=(528, 396)))
    camera = intrinsics_from_meta(meta)
    assert camera.focal_px == pytest.approx(371.329)


def test_lens_distortion_is_removed_before_casting() -> None:
    import cv2

    ideal_camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5)
    distortion = (-0.12, 0.04, 0.001, -0.0005, 0.0)
    lens_camera = CameraIntrinsics(1000, 750, 700.0, 499.5, 374.5, distortion)
    pose = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 100.0, 10.0, -80.0, 0.0)
    ideal = np.array([[50.0, 40.0], [900.0, 700.0], [499.5, 374.5], [120.0, 600.0]])
    normalised = np.column_stack([(ideal - [499.5, 374.5]) / 700.0, np.ones(len(ideal))])
    projected, _ = cv2.projectPoints(
        normalised, np.zeros(3), np.zeros(3), lens_camera.matrix, np.asarray(distortion)
    )
    distorted = np.asarray(projected, dtype=np.float64)
    expected = pixel_to_ground(ideal, ideal_camera, pose).points
    placed = pixel_to_ground(distorted.reshape(-1, 2), lens_camera, pose).points
    assert np.abs(placed - expected).max() < 0.01
    assert (
        np.abs(
            pixel_to_ground(distorted.reshape(-1, 2), ideal_camera, pose).points - expected
        ).max()
        > 1.0
    )


def test_a_stated_gimbal_pitch_is_used_even_without_a_gimbal_yaw() -> None:
    """It used to be placed as nadir whatever pitch it stated."""
    for pitch in ("-60.0", "+0.0", "+60.0"):
        xmp = xmp_attributes(
            {"RelativeAltitude": "+80", "FlightYawDegree": "+45.0", "GimbalPitchDegree": pitch}
        )
        pose = pose_from_meta(read_frame_meta(make_jpeg(gps=standard_gps(), xmp=xmp)))
        assert (pose.yaw_deg, pose.pitch_deg) == (45.0, float(pitch))
    looking_up = pose  # +60°: looking at the sky, what it shows cannot be placed
    camera = intrinsics_from_meta(read_frame_meta(make_jpeg(gps=standard_gps())))
    whole = np.array([[0, 0], [camera.width_px - 1, 0], [camera.width_px - 1, 10], [0, 10]])
    with pytest.raises(GeorefError, match="above the horizon"):
        georeference_polygon(whole.astype(np.float64), camera, looking_up)
    xmp = xmp_attributes({"RelativeAltitude": "+80", "GimbalPitchDegree": "-60.0"})
    with pytest.raises(GeorefError, match="no yaw"):
        pose_from_meta(read_frame_meta(make_jpeg(gps=standard_gps(), xmp=xmp)))


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll"), [(0.0, -90.0, 0.0), (47.0, -90.0, 0.0), (-120.0, -55.0, 2.0)]
)
def test_ground_points_project_back_to_their_pixels(yaw: float, pitch: float, roll: float) -> None:
    """ground_to_pixel inverts pixel_to_ground, lens distortion included; points behind the
    camera have no pixel."""
    camera = CameraIntrinsics(1000, 750, 700.0, 501.0, 372.0, (-0.12, 0.04, 0.001, -0.0005, 0.0))
    pose = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 100.0, yaw, pitch, roll)
    pixels = np.array([[0.0, 0.0], [999.0, 0.0], [999.0, 749.0], [0.0, 749.0], [420.5, 300.25]])
    if pitch > -90.0:
        pixels = pixels[2:]  # the top corners of an oblique frame may see no ground
    ground = pixel_to_ground(pixels, camera, pose, 3.0).points
    assert np.abs(ground_to_pixel(ground, camera, pose, 3.0) - pixels).max() < 1e-3
    behind = np.array([[500000.0, 4000000.0 - 1000.0]])  # 1 km behind a camera facing north
    oblique = CameraPose(CRS.from_epsg(32650), 500000.0, 4000000.0, 100.0, 0.0, -5.0, 0.0)
    assert np.isnan(ground_to_pixel(behind, camera, oblique)).all()
