"""The measures of `dustpatrol train evaluate`: on real photos, IoU and precision of exposed soil
on the hand-marked pixels, the confidence sweep, the overlays; on simulated frames, IoU per
class at each swept confidence, and the thresholds `train calibrate` chooses from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dustpatrol.errors import DustpatrolError
from dustpatrol.evaluation import (
    REAL_PROBES,
    SWEEP_CONFIDENCES,
    Evaluation,
    PixelCounts,
    choose_confidences,
    evaluate_real,
    evaluate_simulated,
)
from vision.detect import Detector

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "vision" / "data" / "real_reference"


def test_real_photos_are_measured_at_the_operating_point_and_below(tmp_path: Path) -> None:
    detector = Detector(ROOT / "models" / "dustpatrol-seg-int8.onnx", conf=0.25)
    summary = evaluate_real(detector, REAL, tmp_path).summary()
    assert summary["frames"] == 8
    soil = summary["classes"]["exposed_soil"]  # type: ignore[index]
    assert soil["truth_pixels"] > 100_000
    for confidence in SWEEP_CONFIDENCES:
        iou = summary[f"exposed_soil IoU at confidence {confidence:g}"]
        assert iou is None or 0.0 <= iou <= 1.0  # type: ignore[operator]
    assert detector.conf == 0.25  # the sweep leaves the detector as it was
    probed = [summary[f"exposed_soil IoU with the photos {probe}"] for probe in REAL_PROBES]
    assert all(iou is None or 0.0 <= iou <= 1.0 for iou in probed)  # type: ignore[operator]
    assert len(set(probed)) > 1  # the photos changed: the measure moves
    # what each marked region was taken for: a share per class, recall among them
    for region in ("vegetation", "exposed_soil"):
        shares = [summary[f"{region} called {name}"] for name in detector.class_names]
        assert all(0.0 <= share <= 1.0 for share in shares)  # type: ignore[operator]
        assert sum(shares) <= 1.0 + 1e-9  # type: ignore[arg-type]
    assert summary["exposed_soil called exposed_soil"] == soil["recall"]
    assert len(list((tmp_path / "real_overlays").glob("*.jpg"))) == 8


def test_simulated_frames_are_measured_at_each_swept_confidence() -> None:
    detector = Detector(ROOT / "models" / "dustpatrol-seg-int8.onnx", conf=0.25)
    summary = evaluate_simulated(detector, [9004], 1).summary()
    assert summary["frames"] == 1
    assert detector.conf == 0.25  # the sweep leaves the detector as it was
    classes = summary["classes"]
    for name in detector.class_names:  # 0.25 again is the operating point again
        assert summary[f"{name} IoU at confidence 0.25"] == classes[name]["iou"]  # type: ignore[index]
    for confidence in SWEEP_CONFIDENCES:
        ious = [
            summary[f"{name} IoU at confidence {confidence:g}"] for name in detector.class_names
        ]
        assert all(iou is not None and 0.0 <= iou <= 1.0 for iou in ious)  # type: ignore[operator]
        assert summary[f"mean IoU at confidence {confidence:g}"] == sum(ious) / 3  # type: ignore[arg-type]
    # fewer pixels pass a higher threshold: the sweep really detected again
    means = {summary[f"mean IoU at confidence {c:g}"] for c in SWEEP_CONFIDENCES}
    assert len(means) == len(SWEEP_CONFIDENCES)


def test_the_mean_over_the_sweep_leaves_out_classes_absent_from_the_truth() -> None:
    detector = Detector(ROOT / "models" / "dustpatrol-seg-int8.onnx", conf=0.25)
    summary = evaluate_simulated(detector, [9001], 1).summary()  # covered soil only
    classes = summary["classes"]
    assert classes["road_dust"]["truth_pixels"] == 0  # type: ignore[index]
    assert classes["covered_soil"]["truth_pixels"] > 0  # type: ignore[index]
    assert summary["mean IoU at confidence 0.25"] == classes["covered_soil"]["iou"]  # type: ignore[index]


def _swept(curves: dict[str, list[float | None]]) -> Evaluation:
    result = Evaluation({name: PixelCounts(tp=10, fn=5) for name in curves})
    for name, ious in curves.items():
        for confidence, iou in zip(SWEEP_CONFIDENCES, ious, strict=True):
            result.extra[f"{name} IoU at confidence {confidence:g}"] = iou
    return result


def test_thresholds_are_chosen_on_a_plateau_not_at_a_cliff_edge() -> None:
    assert SWEEP_CONFIDENCES == (0.03, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5)
    curves: dict[str, list[float | None]] = {
        # the best single value (0.425 at 0.35) sits just before a fall
        "road_dust": [0.377, 0.392, 0.404, 0.398, 0.423, 0.425, 0.279],
        "exposed_soil": [0.779, 0.820, 0.855, 0.856, 0.832, 0.793, 0.718],
        "covered_soil": [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],  # flat: the higher threshold
    }
    chosen = choose_confidences(_swept(curves), ["road_dust", "exposed_soil", "covered_soil"])
    assert chosen == (0.25, 0.15, 0.5)


def test_no_threshold_is_chosen_for_a_class_the_frames_do_not_hold() -> None:
    swept = _swept({"road_dust": [0.5] * 7})
    swept.per_class["road_dust"] = PixelCounts(fp=40)  # found, but never there
    with pytest.raises(DustpatrolError, match="hold no road_dust"):
        choose_confidences(swept, ["road_dust"])
