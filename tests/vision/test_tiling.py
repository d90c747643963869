"""Tiled inference on synthetic images with known answers.

The "model" here is a colour threshold that returns one instance per connected region of a
tile, cut off at the tile's edge exactly as a real model's masks are: the tiling code has to
turn those cut pieces back into whole patches.
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest

from vision.detections import Detections
from vision.errors import VisionError
from vision.tiling import TileMasks, detect_tiled, tile_origins

NAMES = ("exposed_soil", "road_dust", "covered_soil")
COLOURS = {0: (40, 60, 200), 2: (40, 160, 40)}  # BGR of class 0 and class 2 patches


def threshold_model(tiles: list[np.ndarray]) -> list[TileMasks]:
    results = []
    for tile in tiles:
        masks, classes, scores = [], [], []
        for cls, colour in COLOURS.items():
            binary = np.all(np.abs(tile.astype(int) - colour) < 20, axis=2).astype(np.uint8)
            count, components = cv2.connectedComponents(binary)
            for component in range(1, count):
                masks.append(components == component)
                classes.append(cls)
                scores.append(0.9 if cls == 0 else 0.8)
        size = tiles[0].shape[0]
        results.append(
            TileMasks(
                masks=np.asarray(masks, dtype=bool).reshape(-1, size, size),
                class_id=np.asarray(classes, dtype=np.int64),
                confidence=np.asarray(scores, dtype=np.float64),
            )
        )
    return results


def canvas(width: int = 1000, height: int = 700) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def test_tile_origins_cover_the_image_with_the_overlap_asked_for() -> None:
    origins = tile_origins(1000, 384, 64)
    assert origins[0] == 0 and origins[-1] + 384 == 1000
    assert all(b - a <= 384 - 64 for a, b in itertools.pairwise(origins))
    assert tile_origins(300, 384, 64) == [0]
    with pytest.raises(VisionError, match="must exceed the overlap"):
        tile_origins(1000, 64, 64)


def test_a_patch_across_a_tile_seam_is_one_detection_with_its_full_area() -> None:
    image = canvas()
    # Tiles of 384 with overlap 64 over 1000 px start at 0, 308, 616: seams near 346 and 654.
    cv2.circle(image, (346, 350), 120, COLOURS[0], -1)
    found = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    assert len(found) == 1
    assert found.class_name == ["exposed_soil"]
    assert found.area_px[0] == pytest.approx(math.pi * 120**2, rel=0.01)
    x0, y0, x1, y1 = found.xyxy[0]
    assert (x0, y0) == pytest.approx((226 - 0.5, 230 - 0.5), abs=1.0)
    assert (x1, y1) == pytest.approx((467 - 0.5, 471 - 0.5), abs=1.0)


def test_patches_in_the_overlap_are_not_duplicated() -> None:
    image = canvas()
    centres = [(340, 330), (660, 200), (660, 560), (120, 600), (900, 80)]
    for x, y in centres:
        cv2.circle(image, (x, y), 40, COLOURS[0], -1)
    cv2.rectangle(image, (500, 300), (800, 420), COLOURS[2], -1)
    found = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    soil = found[found.class_id == 0]
    assert len(soil) == len(centres)
    assert len(found[found.class_id == 2]) == 1
    net = found[found.class_id == 2]
    assert net.area_px[0] == pytest.approx(301 * 121, rel=0.01)


def test_a_hole_in_a_patch_comes_back_as_a_hole() -> None:
    image = canvas()
    cv2.rectangle(image, (200, 200), (700, 500), COLOURS[2], -1)
    cv2.circle(image, (450, 350), 60, COLOURS[0], -1)
    found = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    net = found[found.class_id == 2]
    assert len(net) == 1 and len(net.rings[0]) == 2  # exterior and one hole
    assert net.area_px[0] == pytest.approx(501 * 301 - math.pi * 60**2, rel=0.01)
    assert len(found[found.class_id == 0]) == 1


def test_coordinates_scale_back_to_the_full_frame() -> None:
    image = canvas(500, 350)
    cv2.rectangle(image, (100, 100), (199, 149), COLOURS[0], -1)
    found = detect_tiled(
        image, threshold_model, tile=384, overlap=64, class_names=NAMES, to_full_frame=4.0
    )
    assert len(found) == 1
    assert found.area_px[0] == pytest.approx(100 * 50 * 16, rel=0.01)
    exterior = found.rings[0][0]
    # A decoded pixel's outer edge maps to the full frame's pixel grid: 100 -> 400 - ...
    assert exterior[:, 0].min() == pytest.approx(100 * 4 + 1.5, abs=0.01)
    assert exterior[:, 0].max() == pytest.approx(199 * 4 + 1.5, abs=0.01)


def test_an_image_smaller_than_a_tile_is_padded_not_refused() -> None:
    image = canvas(200, 150)
    cv2.circle(image, (100, 75), 30, COLOURS[0], -1)
    found = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    assert len(found) == 1
    assert found.area_px[0] == pytest.approx(math.pi * 30**2, rel=0.03)


def test_an_empty_image_gives_empty_detections() -> None:
    found = detect_tiled(canvas(), threshold_model, tile=384, overlap=64, class_names=NAMES)
    assert len(found) == 0
    assert found.class_names == NAMES


def test_a_grayscale_array_is_refused_with_the_reason() -> None:
    with pytest.raises(VisionError, match="BGR uint8"):
        detect_tiled(
            np.zeros((100, 100), dtype=np.uint8),
            threshold_model,
            tile=384,
            overlap=64,
            class_names=NAMES,
        )


def test_detections_select_and_merge_like_arrays() -> None:
    image = canvas()
    for x in (150, 450, 750):
        cv2.circle(image, (x, 300), 50, COLOURS[0], -1)
    cv2.rectangle(image, (100, 500), (300, 600), COLOURS[2], -1)
    found = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    confident = found[found.confidence > 0.85]
    assert len(confident) == 3
    assert set(confident.class_name) == {"exposed_soil"}
    merged = Detections.merge([confident, found[found.class_id == 2]])
    assert len(merged) == 4
    assert len(found[np.array([], dtype=np.int64)]) == 0
    with pytest.raises(VisionError, match="different class names"):
        Detections.merge([found, Detections.empty(("other",))])


def test_a_region_runs_only_the_tiles_that_hold_some_of_it() -> None:
    image = canvas()
    cv2.circle(image, (120, 120), 60, COLOURS[0], -1)  # in the first tile only
    cv2.circle(image, (880, 600), 60, COLOURS[2], -1)  # in the last tile only
    seen: list[int] = []

    def counting(tiles: list[np.ndarray]) -> list[TileMasks]:
        seen.append(len(tiles))
        return threshold_model(tiles)

    region = np.zeros(image.shape[:2], dtype=bool)
    region[100:140, 100:140] = True
    found = detect_tiled(image, counting, tile=384, overlap=64, class_names=NAMES, region=region)
    assert sum(seen) == 1  # of 3 x 2 tiles
    assert found.class_name == ["exposed_soil"]  # the patch outside the region is not looked for
    everywhere = detect_tiled(image, threshold_model, tile=384, overlap=64, class_names=NAMES)
    assert sorted(everywhere.class_name) == ["covered_soil", "exposed_soil"]
    with pytest.raises(VisionError, match="region mask"):
        detect_tiled(
            image, threshold_model, tile=384, overlap=64, class_names=NAMES, region=region[:10]
        )
