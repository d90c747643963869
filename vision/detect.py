"""`detect`: a frame file in, `Detections` in the frame's full-resolution pixels out.

The frame is decoded once, at the scale the target ground resolution needs: JPEG decoding
at 1/2, 1/4 or 1/8 size (Pillow's ``draft``) and then an area resize to the exact scale, so
a 20 MP frame analysed at 10 cm per pixel never exists in memory at full size. A model
exported with dynamic axes runs once over the whole decoded frame when it is at most
``whole_frame_px`` pixels (a 20 MP frame at 10 cm/px is 1.5 Mpx): no overlap computed twice,
no seams. Larger images, and static models, run on overlapping tiles in batches
(`vision.tiling`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from vision.detections import Detections
from vision.errors import VisionError
from vision.onnx_model import Confidence, OnnxSegmenter
from vision.tiling import TileMasks, detect_tiled

MAX_PIXELS = 200_000_000  # refuse decompression bombs before decoding
MIN_SIDE_PX = 32
DEFAULT_CONFIDENCE = 0.25  # for a model that carries no thresholds of its own

UInt8Image = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A frame decoded at analysis scale: pixels and the factor back to full resolution."""

    bgr: UInt8Image
    full_width_px: int
    full_height_px: int
    to_full_frame: float  # full-resolution pixels per decoded pixel


def decode_at_scale(path: Path, scale: float) -> DecodedFrame:
    """Decode ``path`` at ``scale`` (0 < scale <= 1) of its full size, fully and once.

    Raises `VisionError` for files that are missing, not images, truncated, too large or
    too small; grayscale and RGBA images are converted to colour.
    """
    if not 0.0 < scale <= 1.0:
        raise VisionError(f"decode scale must be within (0, 1], got {scale}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise VisionError(f"frame {path} does not exist") from None
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise VisionError(f"{path} is not an image this tool can read (JPEG, PNG, TIFF)") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise VisionError(f"{path} has {width}x{height} pixels, more than {MAX_PIXELS:,}")
        if min(width, height) < MIN_SIDE_PX:
            raise VisionError(f"{path} is {width}x{height} pixels: too small to analyse")
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        if image.format == "JPEG":
            image.draft("RGB", target)  # DCT-domain reduction: 1/2, 1/4 or 1/8, never below
        try:
            image.load()
        except (OSError, SyntaxError) as exc:
            raise VisionError(
                f"{path} is truncated or corrupt ({exc}); copy it again from the drone"
            ) from None
        rgb = image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.uint8)
    bgr = np.ascontiguousarray(pixels[:, :, ::-1])
    if (bgr.shape[1], bgr.shape[0]) != target:
        bgr = np.asarray(cv2.resize(bgr, target, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return DecodedFrame(bgr, width, height, width / target[0])


class Detector:
    """The shipped (or any exported) segmentation model behind one small interface."""

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 2,
        conf: float | None = None,
        iou: float = 0.7,
        overlap: float = 0.17,
        batch: int = 4,
        whole_frame_px: int = 4_000_000,
    ) -> None:
        if not 0.0 <= overlap < 0.9:
            raise VisionError(f"tile overlap {overlap} must be a fraction within 0..0.9")
        self.model = OnnxSegmenter(model_path, threads=threads)
        # One threshold for every class when given; else the model's own per class (chosen
        # by `dustpatrol train calibrate`), or DEFAULT_CONFIDENCE for a model without them.
        self.conf: Confidence = (
            conf if conf is not None else self.model.calibrated_confidence or DEFAULT_CONFIDENCE
        )
        self.iou = iou
        self.overlap_px = round(overlap * self.model.imgsz)
        self.batch = batch
        self.whole_frame_px = whole_frame_px
        gsd = self.model.metadata.get("dustpatrol_gsd_m")
        self.trained_gsd_m = float(gsd) if gsd else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    @property
    def thresholds(self) -> dict[str, float]:
        """The confidence each class must exceed to be detected."""
        conf = self.conf
        values = (conf,) * len(self.class_names) if isinstance(conf, float | int) else conf
        return {name: float(v) for name, v in zip(self.class_names, values, strict=True)}

    def _tiles(self, tiles: list[UInt8Image]) -> list[TileMasks]:
        found = self.model(tiles, conf=self.conf, iou=self.iou)
        return [TileMasks(r.masks, r.class_id, r.confidence, r.offsets) for r in found]

    def detect_image(
        self,
        image_bgr: UInt8Image,
        to_full_frame: float = 1.0,
        region: NDArray[np.bool_] | None = None,
    ) -> Detections:
        """Detections in an image already at the analysis resolution; given ``region`` (a
        mask of the image), only the tiles holding some of it are run."""
        height, width = image_bgr.shape[:2]
        whole = (-(-height // 32) * 32, -(-width // 32) * 32)  # padded to multiples of 32
        tile: int | tuple[int, int] = self.model.imgsz
        if self.model.dynamic and whole[0] * whole[1] <= self.whole_frame_px:
            tile = whole
        return detect_tiled(
            image_bgr,
            self._tiles,
            tile=tile,
            overlap=self.overlap_px,
            class_names=self.class_names,
            batch=self.batch,
            to_full_frame=to_full_frame,
            region=region,
        )

    def detect(
        self, path: Path, frame_gsd_m: float, target_gsd_m: float | None = None
    ) -> Detections:
        """Detections in the frame at ``path`` whose full-resolution ground sample distance is
        ``frame_gsd_m`` (metres per pixel, from its altitude and camera); analysed at
        ``target_gsd_m`` (default: the resolution the model was trained at)."""
        frame = self.decode(path, frame_gsd_m, target_gsd_m)
        return self.detect_image(frame.bgr, frame.to_full_frame)

    def decode(
        self, path: Path, frame_gsd_m: float, target_gsd_m: float | None = None
    ) -> DecodedFrame:
        """The first half of `detect`: the frame decoded at the analysis resolution (a caller
        may decode the next frame while this one is detected)."""
        target = target_gsd_m or self.trained_gsd_m or 0.1
        if not math.isfinite(frame_gsd_m) or frame_gsd_m <= 0:
            raise VisionError(f"frame ground resolution {frame_gsd_m} m/px must be positive")
        if not 0.005 <= target <= 1.0:
            raise VisionError(f"target ground resolution {target} m/px is outside 0.005..1")
        return decode_at_scale(path, min(1.0, frame_gsd_m / target))
