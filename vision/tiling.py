"""Tiled inference: cut an image into overlapping square tiles, run a model on them in batches
and merge what it found into whole-image detections.

Merging works on a label canvas of the whole image rather than on boxes: each tile writes its
masks into the canvas (a pixel keeps the class of the most confident mask covering it), but
only inside the part of the tile it owns (the overlap is split half and half between
neighbouring tiles, so the cut edge of a mask at a tile border is never used). Each connected
region of one class on the canvas is then one detection. A patch crossing a seam is therefore
one detection with its full area, and the overlap never produces duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.detections import Detections
from vision.errors import VisionError

UInt8Image = NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class TileMasks:
    """A tile's masks with a class id and a confidence each. A mask covers the whole tile, or
    only the part starting at its ``offsets`` row (y0, x0) when offsets are given."""

    masks: NDArray[np.bool_] | Sequence[NDArray[np.bool_]]
    class_id: NDArray[np.int64]
    confidence: NDArray[np.floating]
    offsets: NDArray[np.int64] | None = None


TileModel = Callable[[list[UInt8Image]], Sequence[TileMasks]]


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``
    pixels shared by neighbours; the last tile ends exactly at the end."""
    if tile <= overlap:
        raise VisionError(f"tile size {tile} must exceed the overlap {overlap}")
    if length <= tile:
        return [0]
    step = tile - overlap
    count = int(np.ceil((length - tile) / step)) + 1
    # Spread the tiles evenly so every overlap is at least the one asked for.
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _owned(origins: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [start, end) range of image pixels it owns along one axis."""
    owned = []
    for index, start in enumerate(origins):
        low = 0 if index == 0 else (start + origins[index - 1] + tile) // 2
        high = length if index == len(origins) - 1 else (origins[index + 1] + start + tile) // 2
        owned.append((low, high))
    return owned


def detect_tiled(
    image_bgr: UInt8Image,
    model: TileModel,
    *,
    tile: int | tuple[int, int],
    overlap: int,
    class_names: Sequence[str],
    batch: int = 8,
    min_area_px: float = 4.0,
    to_full_frame: float = 1.0,
    region: NDArray[np.bool_] | None = None,
) -> Detections:
    """Detections of ``model`` over the whole of ``image_bgr`` (or, given ``region``, a mask
    of the image's size, over the tiles that hold any of it: the others are not run).

    ``model`` takes a list of BGR tiles (``tile`` square, or ``tile`` = (height, width)) and
    returns their `TileMasks`. Images smaller than a tile are padded (with the mean colour):
    a tile as large as the padded image runs the model once on the whole of it.
    ``to_full_frame`` is the factor from these pixels to the frame's full-resolution pixels
    (the image was decoded at reduced size), applied to the polygons, boxes and areas
    returned.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise VisionError(f"expected a BGR uint8 image, got {image_bgr.shape} {image_bgr.dtype}")
    height, width = image_bgr.shape[:2]
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    padded = image_bgr
    if height < tile_h or width < tile_w:
        mean = image_bgr.reshape(-1, 3).mean(axis=0)
        padded = np.empty((max(height, tile_h), max(width, tile_w), 3), dtype=np.uint8)
        padded[:] = np.round(mean).astype(np.uint8)
        padded[:height, :width] = image_bgr
    ph, pw = padded.shape[:2]
    ys, xs = tile_origins(ph, tile_h, overlap), tile_origins(pw, tile_w, overlap)
    own_y, own_x = _owned(ys, tile_h, ph), _owned(xs, tile_w, pw)
    label = np.zeros((ph, pw), dtype=np.uint8)  # class id + 1, 0 = nothing
    score = np.zeros((ph, pw), dtype=np.float32)
    if region is not None and region.shape != (height, width):
        raise VisionError(f"region mask {region.shape} is not the image's {(height, width)}")
    jobs = [
        (iy, ix)
        for iy in range(len(ys))
        for ix in range(len(xs))
        if region is None or region[ys[iy] : ys[iy] + tile_h, xs[ix] : xs[ix] + tile_w].any()
    ]
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        tiles = [
            np.ascontiguousarray(padded[ys[iy] : ys[iy] + tile_h, xs[ix] : xs[ix] + tile_w])
            for iy, ix in chunk
        ]
        for (iy, ix), found in zip(chunk, model(tiles), strict=True):
            (y_low, y_high), (x_low, x_high) = own_y[iy], own_x[ix]
            ty0, ty1 = y_low - ys[iy], y_high - ys[iy]
            tx0, tx1 = x_low - xs[ix], x_high - xs[ix]
            label_view = label[y_low:y_high, x_low:x_high]
            score_view = score[y_low:y_high, x_low:x_high]
            offsets = (
                found.offsets
                if found.offsets is not None
                else np.zeros((len(found.masks), 2), dtype=np.int64)
            )
            for mask, (oy, ox), cls, conf in zip(
                found.masks, offsets, found.class_id, found.confidence, strict=True
            ):
                # the part of the mask inside the part of the tile this tile owns
                y0, y1 = max(ty0, int(oy)), min(ty1, int(oy) + mask.shape[0])
                x0, x1 = max(tx0, int(ox)), min(tx1, int(ox) + mask.shape[1])
                if y1 <= y0 or x1 <= x0:
                    continue
                labels = label_view[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
                scores = score_view[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]
                inside = mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox] & (scores < conf)
                labels[inside] = int(cls) + 1
                scores[inside] = float(conf)
    return canvas_detections(
        label[:height, :width],
        score[:height, :width],
        class_names,
        min_area_px=min_area_px,
        to_full_frame=to_full_frame,
    )


def canvas_detections(
    label: UInt8Image,
    score: NDArray[np.float32],
    class_names: Sequence[str],
    *,
    min_area_px: float = 4.0,
    to_full_frame: float = 1.0,
) -> Detections:
    """One detection per connected region of each class of a label canvas (class id + 1;
    0 = nothing), scored by the highest confidence inside it."""
    boxes, classes, confidences, all_rings, areas = [], [], [], [], []
    for cls in range(len(class_names)):
        binary = (label == cls + 1).astype(np.uint8)
        if not binary.any():
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for component in range(1, count):
            area = float(stats[component, cv2.CC_STAT_AREA])
            if area < min_area_px:
                continue
            x, y, w, h = (int(v) for v in stats[component, :4])
            region = components[y : y + h, x : x + w] == component
            contours, hierarchy = cv2.findContours(
                region.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
            )
            rings = _rings(contours, hierarchy, x, y, to_full_frame)
            if not rings:
                continue
            boxes.append(
                [
                    (x - 0.5) * to_full_frame,
                    (y - 0.5) * to_full_frame,
                    (x + w - 0.5) * to_full_frame,
                    (y + h - 0.5) * to_full_frame,
                ]
            )
            classes.append(cls)
            confidences.append(float(score[y : y + h, x : x + w][region].max()))
            all_rings.append(rings)
            areas.append(area * to_full_frame**2)
    if not classes:
        return Detections.empty(class_names)
    return Detections(
        xyxy=np.asarray(boxes, dtype=np.float64),
        class_id=np.asarray(classes, dtype=np.int64),
        confidence=np.asarray(confidences, dtype=np.float64),
        rings=tuple(all_rings),
        area_px=np.asarray(areas, dtype=np.float64),
        class_names=tuple(class_names),
    )


def _rings(
    contours: Sequence[NDArray[np.int32]],
    hierarchy: NDArray[np.int32] | None,
    x: int,
    y: int,
    to_full_frame: float,
) -> tuple[NDArray[np.float64], ...]:
    """The outer ring (the largest top-level contour) and its holes, in full-frame pixels."""
    if hierarchy is None or not contours:
        return ()
    links = hierarchy.reshape(-1, 4)
    top = [i for i in range(len(contours)) if links[i, 3] < 0]
    outer = max(top, key=lambda i: cv2.contourArea(contours[i]))

    def convert(contour: NDArray[np.int32]) -> NDArray[np.float64]:
        points = contour.reshape(-1, 2).astype(np.float64) + np.array([x, y], dtype=np.float64)
        return (points + 0.5) * to_full_frame - 0.5

    rings = [convert(contours[outer])]
    rings.extend(
        convert(contours[i])
        for i in range(len(contours))
        if links[i, 3] == outer and len(contours[i]) >= 3
    )
    if len(rings[0]) < 3:
        return ()
    return tuple(rings)
