"""Milliseconds per 20 MP frame through `vision.Detector` (decode at the analysis resolution,
tiles, ONNX Runtime, seam merging) against the `sahi` package's sliced prediction with the
same model at native resolution, and the recall of both on simulated patches of 1 m² or more.

sahi is installed by ``make bench`` (without its dependencies, which would bring a second
OpenCV); without it the baseline rows are skipped with a note.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from bench.results import BenchResult
from dustpatrol.evaluation import rasterise
from sim.camera import PoseNoise, camera_preset
from sim.kinds import GnssMode, GroundTruthClass
from sim.shots import pose_at, shoot
from sim.world import generate_district
from vision.detect import Detector
from vision.training import prepare_offline

MODEL = Path("models/dustpatrol-seg.onnx")
WEIGHTS = Path("models/dustpatrol-seg.pt")
TARGET_MS = 300.0
MIN_PATCH_M2 = 1.0


def _frames(folder: Path, count: int) -> list[tuple[Path, NDArray[np.uint8], float]]:
    district = generate_district(9101, n_sites=12, extent_m=3_000.0)
    camera = camera_preset("m3e")
    sites = [s for s in district.sites if not s.compliant] or list(district.sites)
    frames = []
    for index in range(count):
        centre = sites[index % len(sites)].geometry.centroid
        shot = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=23.0 * index),
            camera,
            PoseNoise(GnssMode.PERFECT),
            seed=index,
        )
        path = folder / f"frame-{index}.jpg"
        path.write_bytes(shot.jpeg)
        frames.append((path, shot.class_mask, camera.gsd_m(100.0)))
    return frames


def _recall(
    predicted: NDArray[np.uint8], truth: NDArray[np.uint8], gsd_m: float
) -> tuple[int, int]:
    """(patches found, patches) of 1 m² or more: found when half its pixels are predicted as
    its class. ``predicted`` holds class id + 1 in the label order (= GroundTruthClass)."""
    min_pixels = MIN_PATCH_M2 / gsd_m**2
    found = total = 0
    for cls in (
        GroundTruthClass.EXPOSED_SOIL,
        GroundTruthClass.ROAD_DUST,
        GroundTruthClass.COVERED_SOIL,
    ):
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (truth == int(cls)).astype(np.uint8), connectivity=8
        )
        for component in range(1, count):
            if stats[component, cv2.CC_STAT_AREA] < min_pixels:
                continue
            x, y, w, h = stats[component, :4]
            region = components[y : y + h, x : x + w] == component
            hit = predicted[y : y + h, x : x + w][region] == int(cls)
            total += 1
            found += bool(hit.mean() >= 0.5)
    return found, total


def _sahi_labels(image_path: Path, width: int, height: int) -> NDArray[np.uint8] | None:
    prepare_offline(Path("var/ultralytics"), threads=2)
    try:
        from sahi import AutoDetectionModel
        from sahi.predict import get_sliced_prediction
    except ImportError:
        return None
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=str(WEIGHTS), confidence_threshold=0.25, device="cpu"
    )
    result = get_sliced_prediction(
        str(image_path),
        model,
        slice_height=384,
        slice_width=384,
        overlap_height_ratio=0.17,
        overlap_width_ratio=0.17,
        verbose=0,
    )
    labels = np.zeros((height, width), dtype=np.uint8)
    for prediction in sorted(result.object_prediction_list, key=lambda p: -p.bbox.area):
        if prediction.mask is None:
            continue
        for polygon in prediction.mask.segmentation:
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
            cv2.fillPoly(labels, [np.round(points).astype(np.int32)], prediction.category.id + 1)
    return labels


def run(quick: bool = False) -> list[BenchResult]:
    if not MODEL.is_file():
        return []
    detector = Detector(MODEL)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        frames = _frames(Path(tmp), 2 if quick else 4)
        ours_s, ours_found, ours_total = [], 0, 0
        detector.detect(frames[0][0], frames[0][2])  # warm-up
        for path, truth, gsd in frames:
            start = time.perf_counter()
            found = detector.detect(path, gsd)
            ours_s.append(time.perf_counter() - start)
            labels = rasterise(found, truth.shape[1], truth.shape[0])
            hit, total = _recall(labels, truth, gsd)
            ours_found, ours_total = ours_found + hit, ours_total + total
        ours_ms = float(np.median(ours_s)) * 1000
        results.append(
            BenchResult(
                "vision",
                "detect 20 MP frame (ours, 10 cm/px, ONNX Runtime)",
                "ms",
                ours_ms,
                min(ours_s) * 1000,
                max(ours_s) * 1000,
                len(ours_s),
                f"< {TARGET_MS:g} ms",
                ours_ms < TARGET_MS,
                f"recall {ours_found}/{ours_total} patches >= {MIN_PATCH_M2:g} m2",
            )
        )
        sahi_s, sahi_found, sahi_total = [], 0, 0
        for path, truth, gsd in frames[: 1 if quick else 2]:
            start = time.perf_counter()
            sahi_labels = _sahi_labels(path, truth.shape[1], truth.shape[0])
            if sahi_labels is None:
                break
            sahi_s.append(time.perf_counter() - start)
            hit, total = _recall(sahi_labels, truth, gsd)
            sahi_found, sahi_total = sahi_found + hit, sahi_total + total
        if sahi_s:
            sahi_ms = float(np.median(sahi_s)) * 1000
            results.append(
                BenchResult(
                    "vision",
                    "sahi sliced prediction, same model, native resolution",
                    "ms",
                    sahi_ms,
                    min(sahi_s) * 1000,
                    max(sahi_s) * 1000,
                    len(sahi_s),
                    note=f"recall {sahi_found}/{sahi_total} patches >= {MIN_PATCH_M2:g} m2",
                )
            )
            results.append(
                BenchResult(
                    "vision",
                    "speed-up over sahi at native resolution",
                    "x",
                    sahi_ms / ours_ms,
                    sahi_ms / ours_ms,
                    sahi_ms / ours_ms,
                    1,
                    ">= 15 x",
                    sahi_ms / ours_ms >= 15.0,
                )
            )
        else:
            results.append(
                BenchResult(
                    "vision",
                    "sahi baseline",
                    "ms",
                    0,
                    0,
                    0,
                    0,
                    note="sahi not installed: make bench installs it",
                )
            )
    return results
