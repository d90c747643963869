"""The real-photo measure of `dustpatrol train evaluate`: IoU and precision of exposed soil on
the hand-marked pixels, the confidence sweep, the overlays."""

from __future__ import annotations

from pathlib import Path

from dustpatrol.evaluation import REAL_PROBES, SWEEP_CONFIDENCES, evaluate_real, evaluate_simulated
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
