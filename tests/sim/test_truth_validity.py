"""Ground truth is always valid and agrees with what the frames show, on many seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, shape
from shapely.validation import explain_validity

from geo.crs import WGS84, transform_geometry
from sim.camera import CameraModel, Pose, PoseNoise, camera_preset
from sim.export import TRUTH_PATCHES_FILE, TRUTH_SITES_FILE, write_district
from sim.kinds import GnssMode, GroundTruthClass
from sim.shots import pose_at, shoot, view_for
from sim.world import District, generate_district

SEEDS = range(1, 51)
CLASSES = (GroundTruthClass.EXPOSED_SOIL, GroundTruthClass.ROAD_DUST, GroundTruthClass.COVERED_SOIL)


def _invalid(features: list[dict[str, Any]], district: District) -> list[str]:
    problems = []
    for feature in features:
        lonlat = shape(feature["geometry"])
        name = str(feature["properties"])
        if not lonlat.is_valid:
            problems.append(f"{name} lon/lat: {explain_validity(lonlat)}")
        utm = transform_geometry(lonlat, WGS84, district.crs)
        if not utm.is_valid:
            problems.append(f"{name} UTM: {explain_validity(utm)}")
    return problems


def _rasterise_truth(
    district: District,
    features: list[dict[str, Any]],
    shot_pose: Pose,
    camera: CameraModel,
    footprint: Polygon,
) -> tuple[np.ndarray, np.ndarray]:
    """The exported truth polygons (lon/lat) drawn into the frame's pixel grid, and the
    pixels their edges cross (whose class depends on the rasteriser's edge convention).

    The lens bends straight edges, so each polygon is cut to the frame's footprint and its
    edges divided every 10 cm before the vertices are projected."""
    view = view_for(district, camera, shot_pose)
    mask = np.zeros((view.camera.height_px, view.camera.width_px), dtype=np.uint8)
    edges = np.zeros_like(mask)
    for feature in features:
        utm = transform_geometry(shape(feature["geometry"]), WGS84, district.crs)
        utm = shapely.segmentize(utm.intersection(footprint.buffer(-0.05)), 0.1)
        if utm.is_empty:
            continue
        cls = GroundTruthClass[str(feature["properties"]["class"]).upper()]
        polygons = getattr(utm, "geoms", [utm])
        for polygon in polygons:
            if not isinstance(polygon, Polygon) or polygon.is_empty:
                continue
            rings = [
                np.round(view.ground_to_pixel(np.asarray(ring.coords)[:-1]) * 16).astype(np.int32)
                for ring in (polygon.exterior, *polygon.interiors)
            ]
            # Even-odd filling of one polygon's exterior and holes, as the renderer does.
            cv2.fillPoly(mask, rings, int(cls), cv2.LINE_8, 4)
            cv2.polylines(edges, rings, True, 1, 2, cv2.LINE_8, 4)
    # The polygons were cut 5 cm inside the footprint: the frame's outermost pixels are edges.
    edges[:2, :] = edges[-2:, :] = edges[:, :2] = edges[:, -2:] = 1
    return mask, edges.astype(bool)


@pytest.mark.parametrize("seed", SEEDS)
def test_truth_is_valid_and_matches_the_rendered_mask(seed: int, tmp_path: Path) -> None:
    district = generate_district(seed, n_sites=10, extent_m=3_000.0)
    for patch in district.patches:
        assert patch.geometry.is_valid, (patch.patch_id, explain_validity(patch.geometry))
    write_district(district, tmp_path)
    patches = json.loads((tmp_path / TRUTH_PATCHES_FILE).read_text())["features"]
    sites = json.loads((tmp_path / TRUTH_SITES_FILE).read_text())["features"]
    assert not _invalid(patches, district)
    assert not _invalid(sites, district)

    site = next(s for s in district.sites if not s.compliant)
    centre = site.geometry.centroid
    camera = camera_preset("m3e", 0.4)
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=17.0 * seed),
        camera,
        PoseNoise(GnssMode.PERFECT),
        seed=seed,
    )
    truth, edges = _rasterise_truth(district, patches, shot.true_pose, camera, shot.footprint_utm)
    for cls in CLASSES:
        rendered = (shot.class_mask == int(cls)) & ~edges
        drawn = (truth == int(cls)) & ~edges
        union = int((rendered | drawn).sum())
        if union < 200:
            continue
        iou = int((rendered & drawn).sum()) / union
        assert iou >= 0.99, (cls.label, iou)


def test_sliver_geometry_is_cleaned_before_export() -> None:
    """Two squares differing by a needle: the visible part must not keep the needle."""
    from sim.world import _clean_area

    square = shapely.box(0, 0, 10, 10)
    needle = Polygon([(0, 5), (10, 5.0000001), (10, 5.0000002)])
    cleaned = _clean_area(square.difference(needle))
    assert cleaned is not None and cleaned.is_valid
    assert cleaned.area == pytest.approx(100.0, abs=0.01)


def test_polygons_in_a_geometry_collection_are_drawn() -> None:
    """An intersection that also touches along a line comes back as a collection: its
    polygons must still be drawn (they were skipped whole, leaving truth the frame lacked)."""
    from sim.render import _contours, _fill_contours

    square = shapely.box(0, 0, 10, 10)
    collection = shapely.GeometryCollection([square, shapely.LineString([(10, 0), (20, 0)])])
    contours = _contours(collection, np.eye(3), 0.0, 0.0)
    image = np.zeros((20, 20), dtype=np.uint8)
    _fill_contours(image, contours, 1)
    assert 90 <= int(image.sum()) <= 121
