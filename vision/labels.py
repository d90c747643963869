"""Segmentation labels on disk: class masks to YOLO-seg polygons and a dataset folder layout.

A YOLO-seg label file has one line per instance: ``class x1 y1 x2 y2 ...`` with coordinates
normalised to 0..1 by the image width and height. Instances here are the connected regions
of each class in a per-pixel class mask. YOLO-seg has no holes: a torn hole in a net is its
own (smaller) instance of another class, and training with overlapping masks draws smaller
instances over larger ones, so the hole wins where it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.errors import VisionError

SPLITS = ("train", "val")


@dataclass(frozen=True, slots=True)
class Instance:
    """One labelled region: a class id and its outline in pixels (N, 2) float."""

    class_id: int
    polygon_px: NDArray[np.float64]


def mask_instances(
    class_mask: NDArray[np.uint8],
    class_ids: dict[int, int],
    *,
    min_area_px: float = 12.0,
    tolerance_px: float = 0.7,
) -> list[Instance]:
    """Instances of a class mask: for each mask value in ``class_ids`` (mask value -> label
    class id), the outer outlines of its connected regions, simplified by ``tolerance_px``;
    regions smaller than ``min_area_px`` are dropped."""
    if class_mask.ndim != 2:
        raise VisionError(f"a class mask is a 2-D array, got shape {class_mask.shape}")
    instances = []
    for value, class_id in class_ids.items():
        binary = (class_mask == value).astype(np.uint8)
        if not binary.any():
            continue
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if cv2.contourArea(contour) < min_area_px:
                continue
            simplified = cv2.approxPolyDP(contour, tolerance_px, True)
            if len(simplified) < 3:
                continue
            instances.append(Instance(class_id, simplified.reshape(-1, 2).astype(np.float64)))
    return instances


def yolo_label_lines(instances: Sequence[Instance], width_px: int, height_px: int) -> list[str]:
    """YOLO-seg label lines for ``instances`` of an image of the given size.

    Pixel centres are at integer coordinates, so a contour pixel x maps to (x + 0.5) / width.
    """
    lines = []
    scale = np.array([width_px, height_px], dtype=np.float64)
    for instance in instances:
        normalised = np.clip((instance.polygon_px + 0.5) / scale, 0.0, 1.0)
        coords = " ".join(f"{v:.5f}" for v in normalised.ravel())
        lines.append(f"{instance.class_id} {coords}")
    return lines


def read_yolo_labels(path: Path, width_px: int, height_px: int) -> list[Instance]:
    """Instances of a YOLO-seg label file, in pixels of an image of the given size."""
    instances = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7 or len(fields) % 2 == 0:
            raise VisionError(
                f"{path}:{number}: a YOLO-seg line is a class id and at least 3 x y pairs"
            )
        try:
            class_id = int(fields[0])
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64).reshape(-1, 2)
        except ValueError as exc:
            raise VisionError(f"{path}:{number}: {exc}") from None
        pixels = values * np.array([width_px, height_px]) - 0.5
        instances.append(Instance(class_id, pixels))
    return instances


def rasterise_instances(
    instances: Sequence[Instance], width_px: int, height_px: int, background: int = 255
) -> NDArray[np.uint8]:
    """A class-id mask of ``instances``: larger instances first, smaller ones drawn over them
    (as YOLO training with overlapping masks does); ``background`` where nothing is."""
    mask = np.full((height_px, width_px), background, dtype=np.uint8)
    ordered = sorted(
        instances, key=lambda i: -abs(cv2.contourArea(i.polygon_px.astype(np.float32)))
    )
    for instance in ordered:
        contour = np.round(instance.polygon_px * 16).astype(np.int32)
        cv2.fillPoly(mask, [contour], int(instance.class_id), cv2.LINE_8, 4)
    return mask


def write_data_yaml(root: Path, names: Sequence[str]) -> Path:
    """``data.yaml`` of a dataset under ``root`` (images/{train,val}, labels/{train,val})."""
    if not names:
        raise VisionError("a dataset needs at least one class name")
    lines = [f"path: {root.resolve()}", "train: images/train", "val: images/val", "names:"]
    lines.extend(f"  {index}: {name}" for index, name in enumerate(names))
    path = root / "data.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def dataset_folders(root: Path) -> dict[tuple[str, str], Path]:
    """The image and label folder of each split, created when missing."""
    folders = {}
    for split in SPLITS:
        for part in ("images", "labels"):
            folder = root / part / split
            folder.mkdir(parents=True, exist_ok=True)
            folders[(part, split)] = folder
    return folders
