"""The ONNX path: the shipped model's post-processing against ultralytics' own, on the same
raw outputs, and the whole detector on rendered tiles."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.detect import Detector
from vision.detections import Detections
from vision.errors import VisionError
from vision.onnx_model import OnnxSegmenter, postprocess

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "dustpatrol-seg.onnx"
TILES = sorted((ROOT / "tests" / "vision" / "data" / "tiles").glob("*.jpg"))


@pytest.fixture(scope="module")
def segmenter() -> OnnxSegmenter:
    return OnnxSegmenter(MODEL)


def test_the_shipped_model_describes_itself(segmenter: OnnxSegmenter) -> None:
    assert segmenter.class_names == ("exposed_soil", "road_dust", "covered_soil")
    assert segmenter.imgsz % 32 == 0
    assert float(segmenter.metadata["dustpatrol_gsd_m"]) == pytest.approx(0.1)
    assert MODEL.stat().st_size < 30e6
    # each shipped model carries its own thresholds (`dustpatrol train calibrate`)
    for shipped in (segmenter, OnnxSegmenter(MODEL.with_name("dustpatrol-seg-int8.onnx"))):
        thresholds = shipped.calibrated_confidence
        assert thresholds is not None and all(0.0 < t < 1.0 for t in thresholds)


@pytest.mark.parametrize("tile_path", TILES, ids=[p.stem for p in TILES])
def test_postprocessing_matches_ultralytics_on_the_same_outputs(
    segmenter: OnnxSegmenter, tile_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from vision.training import _import_yolo

    _import_yolo(threads=1)  # imports ultralytics as the project does (Pillow left unpatched)
    from ultralytics.utils import nms, ops

    tile = cv2.imread(str(tile_path))
    assert tile is not None and tile.shape[:2] == (segmenter.imgsz, segmenter.imgsz)
    batch = np.ascontiguousarray(tile[:, :, ::-1].transpose(2, 0, 1))[None].astype(np.float32)
    raw, protos = segmenter.session.run(None, {segmenter.input_name: batch / 255.0})
    ours = postprocess(raw[0], protos[0], segmenter.imgsz, conf=0.1, iou=0.7)

    theirs = nms.non_max_suppression(
        torch.from_numpy(raw), 0.1, 0.7, nc=len(segmenter.class_names), max_det=300
    )[0]
    assert len(ours.confidence) == len(theirs)
    if not len(theirs):
        return
    masks = (
        ops.process_mask(
            torch.from_numpy(protos[0]), theirs[:, 6:], theirs[:, :4], tile.shape[:2], upsample=True
        )
        .numpy()
        .astype(bool)
    )
    np.testing.assert_allclose(ours.confidence, theirs[:, 4].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(ours.class_id, theirs[:, 5].numpy().astype(int))
    np.testing.assert_allclose(ours.xyxy, theirs[:, :4].clamp(0, 384).numpy(), atol=1e-3)
    for mine, reference in zip(ours.full_masks(), masks, strict=True):
        union = (mine | reference).sum()
        if union:
            assert (mine & reference).sum() / union > 0.99


def test_the_detector_finds_the_patches_of_rendered_tiles() -> None:
    detector = Detector(MODEL)
    found_any = False
    for tile_path in TILES:
        tile = cv2.imread(str(tile_path))
        detections = detector.detect_image(np.asarray(tile, dtype=np.uint8))
        assert set(detections.class_name) <= set(detector.class_names)
        found_any |= len(detections) > 0
    assert found_any


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped weights exported with dynamic axes, beside a file the export must not
    touch (ultralytics writes <weights>.onnx next to the weights it exports)."""
    pytest.importorskip("torch")
    from vision.training import export_onnx

    folder = tmp_path_factory.mktemp("export")
    weights = folder / "dustpatrol-seg.pt"
    weights.write_bytes((ROOT / "models" / "dustpatrol-seg.pt").read_bytes())
    bystander = folder / "dustpatrol-seg.onnx"
    bystander.write_bytes(b"not to be overwritten")
    out = export_onnx(
        weights, 384, folder / "out" / "dynamic.onnx", folder / "ultralytics",
        metadata={"dustpatrol_gsd_m": "0.1"}, dynamic=True,
    )  # fmt: skip
    assert bystander.read_bytes() == b"not to be overwritten"
    return out


def _painted(found: Detections, shape: tuple[int, int]) -> np.ndarray:
    """Each detection's polygon filled with its class id + 1, its holes left out."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for index in range(len(found)):
        exterior, *holes = (np.round(ring).astype(np.int32) for ring in found.rings[index])
        inside = np.zeros(shape, dtype=np.uint8)
        cv2.fillPoly(inside, [exterior], 1)
        for hole in holes:
            cv2.fillPoly(inside, [hole], 0)
        canvas[inside > 0] = int(found.class_id[index]) + 1
    return canvas


def test_a_dynamic_model_runs_a_whole_frame_in_one_pass(dynamic_model: Path) -> None:
    segmenter = OnnxSegmenter(dynamic_model)
    assert segmenter.dynamic and segmenter.imgsz == 384
    static, dynamic = Detector(MODEL), Detector(dynamic_model)
    classes_placed: set[int] = set()
    for tile_path in TILES:
        tile = np.asarray(cv2.imread(str(tile_path)), dtype=np.uint8)
        # the same weights on the same tile: the same answer from either export
        same = _painted(dynamic.detect_image(tile), tile.shape[:2])
        reference = _painted(static.detect_image(tile), tile.shape[:2])
        assert (same == reference).mean() > 0.995
        # a larger frame (the tile and its mirror images around it) in one pass: what the
        # detector returns, in frame pixels, is what the model's own masks say there (masks
        # cut to their boxes and put back at their offsets, merged, outlined)
        frame = np.asarray(cv2.copyMakeBorder(tile, 384, 0, 768, 0, cv2.BORDER_REFLECT), np.uint8)
        placed = _painted(dynamic.detect_image(frame), frame.shape[:2])
        raw = segmenter([frame], conf=dynamic.conf, iou=dynamic.iou)[0]
        expected = np.zeros(frame.shape[:2], dtype=np.uint8)
        for index in np.argsort(raw.confidence):  # the most confident mask on top
            expected[raw.full_masks()[index]] = int(raw.class_id[index]) + 1
        assert (placed == expected).mean() > 0.98
        classes_placed |= set(np.unique(expected).tolist()) - {0}
    # Some frame showed something to place (the shipped weights vary in what they see in
    # these mirrored frames, well outside the 384 px crops they were trained on).
    assert classes_placed
    with pytest.raises(VisionError, match="multiples of 32"):
        segmenter([np.zeros((100, 100, 3), dtype=np.uint8)])


def test_a_threshold_per_class_filters_each_class_alone(segmenter: OnnxSegmenter) -> None:
    """One class held to a threshold nothing reaches, the others as low as one threshold for
    all: those keep exactly what they had (non-maximum suppression is per class)."""
    seen_classes: set[int] = set()
    for tile_path in TILES:
        tile = np.asarray(cv2.imread(str(tile_path)), dtype=np.uint8)
        batch = np.ascontiguousarray(tile[:, :, ::-1].transpose(2, 0, 1))[None].astype(np.float32)
        raw, protos = segmenter.session.run(None, {segmenter.input_name: batch / 255.0})
        everything = postprocess(raw[0], protos[0], segmenter.imgsz, conf=0.02, iou=0.7)
        per_class = postprocess(raw[0], protos[0], segmenter.imgsz, conf=(0.02, 1.0, 0.02), iou=0.7)
        seen_classes |= set(everything.class_id.tolist())
        assert 1 not in per_class.class_id
        others = everything.class_id != 1
        np.testing.assert_array_equal(per_class.class_id, everything.class_id[others])
        np.testing.assert_allclose(per_class.confidence, everything.confidence[others])
    assert 1 in seen_classes  # road dust was there to be held back


def test_a_model_carries_its_own_thresholds(tmp_path: Path) -> None:
    from vision.onnx_model import confidence_metadata, write_metadata

    calibrated = write_metadata(
        MODEL,
        confidence_metadata(("exposed_soil", "road_dust", "covered_soil"), (0.05, 0.25, 0.35)),
        tmp_path / "calibrated.onnx",
    )
    assert Detector(calibrated).conf == (0.05, 0.25, 0.35)
    assert Detector(calibrated).thresholds == {
        "exposed_soil": 0.05, "road_dust": 0.25, "covered_soil": 0.35
    }  # fmt: skip
    assert set(Detector(calibrated, conf=0.3).thresholds.values()) == {0.3}
    assert Detector(calibrated, conf=0.3).conf == 0.3  # one for all, when given
    import onnx

    from vision.onnx_model import CONFIDENCE_KEY

    bare = onnx.load(str(MODEL))
    kept = [entry for entry in bare.metadata_props if entry.key != CONFIDENCE_KEY]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    assert Detector(tmp_path / "bare.onnx").conf == 0.25  # a model without thresholds of its own
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(VisionError, match="3 classes"):
        OnnxSegmenter(calibrated)([], conf=(0.1, 0.2))


@pytest.mark.parametrize(
    "written",
    ['{"exposed_soil": 0.1, "road_dust": 0.2}', '{"exposed_soil": 0.1, "road_dust": 0.2, '
     '"covered_soil": 1.5}', "0.25", "not json"],
)  # fmt: skip
def test_thresholds_a_model_cannot_mean_are_refused(tmp_path: Path, written: str) -> None:
    from vision.onnx_model import CONFIDENCE_KEY, write_metadata

    broken = write_metadata(MODEL, {CONFIDENCE_KEY: written}, tmp_path / "broken.onnx")
    with pytest.raises(VisionError, match="confidence thresholds"):
        OnnxSegmenter(broken)
