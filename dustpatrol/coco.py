"""COCO segmentation exports (CVAT, Label Studio) to YOLO-seg datasets, and back.

Categories are matched to the detector's classes by name (``exposed_soil``, ``road_dust``,
``covered_soil``); other categories are counted and left out. An image without annotations
becomes a hard negative (an empty label file). Polygons and RLE masks (compressed or not) are
read; masks become the outlines of their connected regions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from dustpatrol.errors import DustpatrolError
from dustpatrol.training import CLASS_NAMES
from vision.labels import (
    Instance,
    dataset_folders,
    mask_instances,
    write_data_yaml,
    yolo_label_lines,
)


class _CocoImage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    file_name: str
    width: int
    height: int


class _CocoCategory(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    name: str


class _CocoAnnotation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image_id: int
    category_id: int
    segmentation: list[list[float]] | dict[str, Any]
    iscrowd: int = 0


class _Coco(BaseModel):
    model_config = ConfigDict(extra="ignore")
    images: list[_CocoImage]
    annotations: list[_CocoAnnotation]
    categories: list[_CocoCategory]


def decode_rle(counts: list[int] | str, height: int, width: int) -> NDArray[np.uint8]:
    """A COCO RLE mask (column-major runs, starting with zeros) as a (height, width) array."""
    if isinstance(counts, str):
        counts = _decode_compressed_counts(counts)
    flat = np.zeros(height * width, dtype=np.uint8)
    position, value = 0, 0
    for run in counts:
        if run < 0 or position + run > flat.size:
            raise DustpatrolError("an RLE mask runs past the end of its image")
        flat[position : position + run] = value
        position += run
        value = 1 - value
    return flat.reshape(width, height).T.copy()


def _decode_compressed_counts(text: str) -> list[int]:
    """COCO's compressed RLE string: 5 bits per character, continuation bit 0x20, sign bit
    0x10 on the last chunk, and each count after the second stored relative to the one two
    places before it."""
    counts: list[int] = []
    index = 0
    data = text.encode("ascii")
    while index < len(data):
        value, shift, more = 0, 0, True
        while more:
            char = data[index] - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            index += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _instances(
    annotation: _CocoAnnotation, class_id: int, width: int, height: int
) -> list[Instance]:
    segmentation = annotation.segmentation
    if isinstance(segmentation, list):
        instances = []
        for polygon in segmentation:
            if len(polygon) < 6 or len(polygon) % 2:
                raise DustpatrolError(
                    f"annotation on image {annotation.image_id}: a polygon needs at least 3 "
                    "x y pairs"
                )
            # COCO pixel coordinates put pixel centres at +0.5.
            instances.append(Instance(class_id, np.asarray(polygon).reshape(-1, 2) - 0.5))
        return instances
    counts = segmentation.get("counts")
    size = segmentation.get("size")
    if counts is None or size != [height, width]:
        raise DustpatrolError(
            f"annotation on image {annotation.image_id}: an RLE mask needs counts and size "
            f"[{height}, {width}]"
        )
    mask = decode_rle(counts, height, width)
    return mask_instances(mask, {1: class_id})


def import_coco(
    annotations_path: Path, images_dir: Path, out: Path, val_share: float = 0.2
) -> tuple[Path, dict[str, int]]:
    """Write a YOLO-seg dataset from a COCO segmentation file; returns data.yaml and counts."""
    if not 0.0 < val_share < 1.0:
        raise DustpatrolError(f"validation share must be within (0, 1), got {val_share}")
    try:
        coco = _Coco.model_validate(json.loads(annotations_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise DustpatrolError(f"{annotations_path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DustpatrolError(f"{annotations_path} is not JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DustpatrolError(
            f"{annotations_path} is not a COCO segmentation file: {where}: {first['msg']}"
        ) from None
    class_of = {c.id: CLASS_NAMES.index(c.name) for c in coco.categories if c.name in CLASS_NAMES}
    if not class_of:
        raise DustpatrolError(
            f"none of the categories ({', '.join(c.name for c in coco.categories)}) is one of "
            f"the detector's classes ({', '.join(CLASS_NAMES)}); rename them in your labelling tool"
        )
    by_image: dict[int, list[_CocoAnnotation]] = {}
    skipped: Counter[str] = Counter()
    names = {c.id: c.name for c in coco.categories}
    for annotation in coco.annotations:
        if annotation.category_id not in class_of:
            skipped[names.get(annotation.category_id, str(annotation.category_id))] += 1
            continue
        by_image.setdefault(annotation.image_id, []).append(annotation)
    folders = dataset_folders(out)
    counts = {"images": 0, "instances": 0, "negatives": 0, "skipped": sum(skipped.values())}
    for image in coco.images:
        source = images_dir / image.file_name
        if not source.is_file():
            raise DustpatrolError(f"{source} (image {image.id} of {annotations_path}) is missing")
        bucket = int(hashlib.sha256(image.file_name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        split = "val" if bucket < val_share else "train"
        instances = [
            instance
            for annotation in by_image.get(image.id, [])
            for instance in _instances(
                annotation, class_of[annotation.category_id], image.width, image.height
            )
        ]
        stem = (
            Path(image.file_name).stem
            + "-"
            + hashlib.sha256(image.file_name.encode()).hexdigest()[:6]
        )
        target = folders[("images", split)] / (stem + Path(image.file_name).suffix.lower())
        shutil.copyfile(source, target)
        decoded = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
        if decoded is None or decoded.shape[:2] != (image.height, image.width):
            raise DustpatrolError(
                f"{source} is not a readable {image.width}x{image.height} image as the "
                "annotations say"
            )
        lines = yolo_label_lines(instances, image.width, image.height)
        (folders[("labels", split)] / f"{stem}.txt").write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )
        counts["images"] += 1
        counts["instances"] += len(instances)
        counts["negatives"] += not instances
    return write_data_yaml(out, CLASS_NAMES), counts
