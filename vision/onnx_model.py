"""A YOLO segmentation model exported to ONNX, run with ONNX Runtime directly.

The exported graph takes RGB images (B, 3, H, W) scaled to 0..1 (a static square size, or any
multiple of 32 when exported with dynamic axes) and returns ``output0`` (B, 4 + C + 32, A):
per anchor the box centre and size in input pixels, C class scores (already sigmoid) and 32
mask coefficients; and ``output1`` (B, 32, H/4, W/4), the mask prototypes. Post-processing
here is the same as ultralytics': confidence filter, per-class non-maximum suppression, masks
as the sigmoid of coefficients times prototypes, upsampled to the input, cropped to the box
and thresholded at 0.5. Each mask is kept only inside its box (a whole 20 MP frame at 10 cm/px
is 1.5 Mpx: a full-size mask per detection would cost 1.5 MB each).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.errors import VisionError

UInt8Image = NDArray[np.uint8]
MAX_DETECTIONS = 300
# The model's own confidence threshold per class, chosen on validation districts by
# `dustpatrol train calibrate`: JSON ``{"class name": threshold, ...}`` in the metadata.
CONFIDENCE_KEY = "dustpatrol_confidence"
# One confidence threshold for every class, or one per class (in the model's class order).
Confidence = float | tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TileResult:
    """What the model found in one tile, in the tile's pixels."""

    xyxy: NDArray[np.float32]  # (N, 4)
    confidence: NDArray[np.float32]  # (N,)
    class_id: NDArray[np.int64]  # (N,)
    masks: tuple[NDArray[np.bool_], ...]  # each (y1 - y0, x1 - x0): the mask inside its box
    offsets: NDArray[np.int64]  # (N, 2): y0, x0 of each mask in the tile
    size: tuple[int, int]  # the tile's height and width

    def full_masks(self) -> NDArray[np.bool_]:
        """(N, H, W) masks over the whole tile (for tests and small tiles)."""
        full = np.zeros((len(self.masks), *self.size), dtype=bool)
        for index, (mask, (y0, x0)) in enumerate(zip(self.masks, self.offsets, strict=True)):
            full[index, y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
        return full


class OnnxSegmenter:
    """An exported YOLO segmentation model; call it with a batch of BGR tiles (squares of
    ``imgsz`` for a static model; any size in multiples of 32 for a dynamic one)."""

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        self.path = path
        if not path.is_file():
            raise VisionError(
                f"model file {path} does not exist: use a shipped one (models/dustpatrol-seg-int8"
                ".onnx, models/dustpatrol-seg.onnx) or export one with `dustpatrol train export`"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise VisionError("onnxruntime is not installed: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise VisionError(
                f"{path} is not a usable ONNX model ({type(exc).__name__}: {exc}); "
                "re-export it with `dustpatrol train export`"
            ) from None
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 2:
            raise VisionError(
                f"{path} is not a YOLO segmentation model: expected 1 input and 2 outputs "
                f"(detections and mask prototypes), found {len(inputs)} and {len(outputs)}"
            )
        shape = inputs[0].shape
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(metadata)
        self.dynamic = len(shape) == 4 and not isinstance(shape[2], int)
        if len(shape) != 4 or not (
            self.dynamic or (isinstance(shape[2], int) and shape[2] == shape[3])
        ):
            raise VisionError(
                f"{path} has input shape {shape}; export it with a static square size or "
                "dynamic axes"
            )
        self.input_name = inputs[0].name
        # The tile size: the static input, or the size a dynamic model was trained at.
        self.imgsz = int(shape[2]) if not self.dynamic else _trained_size(metadata, path)
        self.batch_size = shape[0] if isinstance(shape[0], int) else None
        self.class_names = _class_names(metadata, path)
        channels = outputs[0].shape[1]
        if isinstance(channels, int) and channels != 4 + len(self.class_names) + 32:
            raise VisionError(
                f"{path}: its output has {channels} channels, which does not match "
                f"{len(self.class_names)} classes and 32 mask coefficients"
            )
        self.calibrated_confidence = _calibrated(metadata, self.class_names, path)

    def __call__(
        self, tiles_bgr: list[UInt8Image], conf: Confidence = 0.25, iou: float = 0.7
    ) -> list[TileResult]:
        """Detections in each tile (BGR uint8, all of one size: ``imgsz`` square for a static
        model, multiples of 32 for a dynamic one) scoring above ``conf`` (one threshold, or
        one per class)."""
        if not isinstance(conf, float | int) and len(conf) != len(self.class_names):
            raise VisionError(
                f"{len(conf)} confidence thresholds for the {len(self.class_names)} classes "
                f"{', '.join(self.class_names)}: give one, or one per class"
            )
        if not tiles_bgr:
            return []
        first = tiles_bgr[0].shape
        for tile in tiles_bgr:
            if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape != first:
                raise VisionError(
                    f"tiles must be BGR uint8 of one size, got {tile.shape} {tile.dtype}"
                )
        if not self.dynamic and first != (self.imgsz, self.imgsz, 3):
            raise VisionError(f"tiles must be {self.imgsz}x{self.imgsz} BGR, got {first}")
        if self.dynamic and (first[0] % 32 or first[1] % 32):
            raise VisionError(f"tiles of a dynamic model are multiples of 32, got {first}")
        results: list[TileResult] = []
        step = self.batch_size or len(tiles_bgr)
        for start in range(0, len(tiles_bgr), step):
            chunk = tiles_bgr[start : start + step]
            batch = np.stack([tile[:, :, ::-1] for tile in chunk]).astype(np.float32)
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) / np.float32(255.0)
            predictions, prototypes = self.session.run(None, {self.input_name: batch})
            for index in range(len(chunk)):
                results.append(
                    postprocess(predictions[index], prototypes[index], first[:2], conf, iou)
                )
        return results


def _class_names(metadata: dict[str, str], path: Path) -> tuple[str, ...]:
    raw = metadata.get("names")
    if raw is None:
        raise VisionError(f"{path} carries no class names in its metadata; re-export it")
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise VisionError(f"{path}: its class names {raw!r} cannot be read") from None
    if not isinstance(names, dict) or sorted(names) != list(range(len(names))):
        raise VisionError(f"{path}: its class names {raw!r} are not numbered 0..n-1")
    return tuple(str(names[i]) for i in range(len(names)))


def _calibrated(
    metadata: dict[str, str], names: tuple[str, ...], path: Path
) -> tuple[float, ...] | None:
    """The per-class thresholds `dustpatrol train calibrate` wrote into the model, if any."""
    raw = metadata.get(CONFIDENCE_KEY)
    if raw is None:
        return None
    try:
        chosen = json.loads(raw)
        values = tuple(float(chosen[name]) for name in names)
    except (ValueError, TypeError, KeyError):
        raise VisionError(
            f"{path}: its confidence thresholds {raw!r} do not give a number for each of "
            f"{', '.join(names)}; run `dustpatrol train calibrate` on it again"
        ) from None
    if not all(0.0 <= value <= 1.0 for value in values):
        raise VisionError(f"{path}: its confidence thresholds {raw!r} are not within 0..1")
    return values


def confidence_metadata(names: Sequence[str], thresholds: Sequence[float]) -> dict[str, str]:
    """The metadata entry that makes ``thresholds`` a model's own (see `CONFIDENCE_KEY`)."""
    chosen = {name: round(float(value), 4) for name, value in zip(names, thresholds, strict=True)}
    return {CONFIDENCE_KEY: json.dumps(chosen)}


def write_metadata(path: Path, entries: dict[str, str], out: Path | None = None) -> Path:
    """Add (or replace) ``entries`` in an ONNX model's metadata; written to ``out`` (default:
    the model itself, replaced whole, never half-written)."""
    import onnx

    target = out or path
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".partial")
    onnx.save(model, str(scratch))
    scratch.replace(target)
    return target


def _trained_size(metadata: dict[str, str], path: Path) -> int:
    """The square size a model was trained at (ultralytics writes ``imgsz`` as [h, w])."""
    try:
        size = ast.literal_eval(metadata.get("imgsz", ""))
        value = int(size[0]) if isinstance(size, list | tuple) else int(size)
    except (ValueError, SyntaxError, TypeError, IndexError):
        raise VisionError(f"{path} does not say the image size it was trained at") from None
    if value % 32 or value <= 0:
        raise VisionError(f"{path}: its image size {value} is not a multiple of 32")
    return value


def _sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


def postprocess(
    prediction: NDArray[np.float32],
    prototypes: NDArray[np.float32],
    size: int | tuple[int, int],
    conf: Confidence,
    iou: float,
) -> TileResult:
    """Boxes, scores, classes and masks of one tile (``size``: its side, or height and
    width) from the raw model outputs; ``conf``: one threshold, or one per class."""
    height, width = (size, size) if isinstance(size, int) else size
    n_masks = prototypes.shape[0]
    rows = prediction.T  # (A, 4 + C + 32)
    scores_all = rows[:, 4:-n_masks]
    class_id = scores_all.argmax(axis=1)
    score = scores_all[np.arange(len(rows)), class_id]
    limit = np.asarray(conf, dtype=np.float32)
    keep = score > (limit[class_id] if limit.ndim else limit)
    if not keep.any():
        return _empty((height, width))
    rows, class_id, score = rows[keep], class_id[keep], score[keep]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    # Per-class NMS as one class-agnostic pass over boxes offset by class (ultralytics' way).
    offset = class_id[:, None].astype(np.float32) * 7680.0
    shifted = xyxy + offset
    order = _nms(shifted, score, iou)[:MAX_DETECTIONS]
    xyxy, score, class_id = xyxy[order], score[order], class_id[order]
    coefficients = rows[order][:, -n_masks:]
    mh, mw = prototypes.shape[1:]
    logits = (coefficients @ prototypes.reshape(n_masks, -1)).reshape(-1, mh, mw)
    clipped = np.clip(xyxy, 0, [width, height, width, height])
    sy, sx = mh / height, mw / width  # prototype cells per input pixel
    masks: list[NDArray[np.bool_]] = []
    offsets = np.zeros((len(order), 2), dtype=np.int64)
    for index in range(len(order)):
        # Pixel column c is inside the box when x0 <= c < x1 (as ultralytics crops).
        x0, y0, x1, y1 = (math.ceil(float(v)) for v in clipped[index])
        x1, y1 = max(x1, x0), max(y1, y0)
        offsets[index] = (y0, x0)
        if x1 == x0 or y1 == y0:
            masks.append(np.zeros((y1 - y0, x1 - x0), dtype=bool))
            continue
        # The bilinear upsampling of the whole prototype map (half-pixel centres, edges
        # replicated, as cv2.resize and ultralytics do), evaluated only inside the box.
        transform = np.array(
            [[sx, 0.0, (x0 + 0.5) * sx - 0.5], [0.0, sy, (y0 + 0.5) * sy - 0.5]], dtype=np.float64
        )
        upsampled = cv2.warpAffine(
            logits[index],
            transform,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        masks.append(upsampled > 0.0)  # sigmoid > 0.5
    return TileResult(
        xyxy=clipped.astype(np.float32),
        confidence=score.astype(np.float32),
        class_id=class_id.astype(np.int64),
        masks=tuple(masks),
        offsets=offsets,
        size=(height, width),
    )


def _empty(size: tuple[int, int]) -> TileResult:
    return TileResult(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        confidence=np.zeros(0, dtype=np.float32),
        class_id=np.zeros(0, dtype=np.int64),
        masks=(),
        offsets=np.zeros((0, 2), dtype=np.int64),
        size=size,
    )


def _nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> NDArray[np.int64]:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    kept: list[int] = []
    while len(order):
        best = int(order[0])
        kept.append(best)
        rest = order[1:]
        ix0 = np.maximum(x0[best], x0[rest])
        iy0 = np.maximum(y0[best], y0[rest])
        ix1 = np.minimum(x1[best], x1[rest])
        iy1 = np.minimum(y1[best], y1[rest])
        inter = np.maximum(ix1 - ix0, 0) * np.maximum(iy1 - iy0, 0)
        overlap = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(kept, dtype=np.int64)
