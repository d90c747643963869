"""`Detections`: the only thing that leaves `vision`.

Array-backed, like supervision's: boxes, class ids and confidences are numpy arrays of one
length; each detection's outline is a list of rings in full-frame pixel coordinates
(exterior first, then holes), where (0, 0) is the centre of the top-left pixel.
Boolean-mask and index selection work as on arrays: ``detections[detections.confidence > .5]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from vision.errors import VisionError

Ring = NDArray[np.float64]  # (K, 2) pixel coordinates, not closed


@dataclass(frozen=True, slots=True)
class Detections:
    """Segmented detections in one image's full-frame pixel coordinates."""

    xyxy: NDArray[np.float64]  # (N, 4) x0, y0, x1, y1
    class_id: NDArray[np.int64]  # (N,)
    confidence: NDArray[np.float64]  # (N,) 0..1
    rings: tuple[tuple[Ring, ...], ...]  # per detection: exterior ring, then holes
    area_px: NDArray[np.float64]  # (N,) mask area in full-frame pixels
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.class_id)
        if self.xyxy.shape != (n, 4):
            raise VisionError(f"xyxy must have shape ({n}, 4), got {self.xyxy.shape}")
        if len(self.confidence) != n or len(self.rings) != n or len(self.area_px) != n:
            raise VisionError("every field of Detections must have one entry per detection")

    @staticmethod
    def empty(class_names: Sequence[str] = ()) -> Detections:
        return Detections(
            xyxy=np.zeros((0, 4)),
            class_id=np.zeros(0, dtype=np.int64),
            confidence=np.zeros(0),
            rings=(),
            area_px=np.zeros(0),
            class_names=tuple(class_names),
        )

    def __len__(self) -> int:
        return len(self.class_id)

    def __getitem__(self, selection: NDArray[np.bool_] | NDArray[np.int64] | slice) -> Detections:
        indices = np.arange(len(self))[selection]
        return Detections(
            xyxy=self.xyxy[indices],
            class_id=self.class_id[indices],
            confidence=self.confidence[indices],
            rings=tuple(self.rings[int(i)] for i in indices),
            area_px=self.area_px[indices],
            class_names=self.class_names,
        )

    @property
    def class_name(self) -> list[str]:
        """The class name of each detection (needs ``class_names``)."""
        if not self.class_names and len(self):
            raise VisionError("these detections carry no class names")
        return [self.class_names[int(c)] for c in self.class_id]

    @staticmethod
    def merge(parts: Sequence[Detections]) -> Detections:
        """All detections of ``parts`` in one (they must share their class names)."""
        if not parts:
            return Detections.empty()
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise VisionError("cannot merge detections with different class names")
        return Detections(
            xyxy=np.concatenate([p.xyxy for p in parts]).reshape(-1, 4),
            class_id=np.concatenate([p.class_id for p in parts]).astype(np.int64),
            confidence=np.concatenate([p.confidence for p in parts]),
            rings=tuple(r for p in parts for r in p.rings),
            area_px=np.concatenate([p.area_px for p in parts]),
            class_names=names,
        )
