"""The review loop: findings analysts confirmed or rejected, as training data.

Analysts confirm or reject every finding of a patrol in the notice service. This module turns
their decisions into a YOLO-seg dataset the detector can be fine-tuned on
(`dustpatrol train model --weights models/dustpatrol-seg.pt --data ...`):

- for each reviewed finding and each frame its evidence names (at most a few), the finding's
  ground outline is projected back into the frame through the frame's own metadata
  (position, attitude, lens), and a square crop at the model's ground resolution is cut
  around it;
- a **confirmed** finding is a label of its class in every crop it reaches;
- a **rejected** finding gets no label: its crop is a hard negative, teaching the model that
  what it called soil there is background;
- a crop that overlaps a finding nobody has reviewed yet is left out (what it shows is not
  known), and so is a finding whose frame is missing from the store; the summary says which.

Limits, said plainly: analysts review what the model found, so soil the model missed in the
same crop is labelled background; the crops are centred on the finding to keep that small.
YOLO-seg has no holes: a confirmed outline with a hole is labelled as its exterior. The
outline is the merged ground polygon of all frames, so a frame with a poor position puts it
slightly off: RTK frames are exact to a few pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon, box, shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import NotFoundError
from api.models.flights import Frame
from api.models.notices import Finding, FindingReview
from api.services.evidence import evidence_frame
from api.services.frames import frame_file
from dustpatrol.errors import DustpatrolError
from dustpatrol.pipeline import frame_gsd_m
from dustpatrol.settings import Settings
from dustpatrol.training import CLASS_NAMES
from geo.crs import WGS84, transform_geometry
from geo.errors import GeoError
from geo.frames import read_frame_meta
from geo.georef import (
    CameraIntrinsics,
    CameraPose,
    ground_to_pixel,
    intrinsics_from_meta,
    pose_from_meta,
)
from vision.detect import decode_at_scale
from vision.errors import VisionError
from vision.labels import Instance, dataset_folders, write_data_yaml, yolo_label_lines

PAD_GREY = 114  # what YOLO letterboxing pads with
REVIEWED = (FindingReview.CONFIRMED.value, FindingReview.REJECTED.value)


@dataclass(slots=True)
class ReviewedExport:
    """What `export_reviewed` wrote."""

    data_yaml: Path
    images: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    labels: int = 0  # confirmed outlines written
    negatives: int = 0  # crops without any label (rejected findings alone)
    skipped: list[str] = field(default_factory=list)  # what was left out, and why


@dataclass(frozen=True, slots=True)
class _Crop:
    finding: Finding
    frame: Frame


def export_reviewed(
    session: Session,
    settings: Settings,
    out: Path,
    *,
    imgsz: int = 384,
    gsd_m: float | None = None,
    val_share: float = 0.2,
    frames_per_finding: int = 3,
    command: Sequence[str] = (),
) -> ReviewedExport:
    """Write the reviewed findings of the database behind ``session`` as a YOLO-seg dataset
    under ``out`` (see the module docstring); crops of ``imgsz`` pixels at ``gsd_m`` metres
    per pixel (default: the analysis resolution of the settings). Split by site: every
    finding of a site goes to the same split."""
    if imgsz % 32 or not 64 <= imgsz <= 2048:
        raise DustpatrolError(f"image size must be a multiple of 32 in 64..2048, got {imgsz}")
    if not 0.0 <= val_share < 1.0:
        raise DustpatrolError(f"validation share must be within [0, 1), got {val_share}")
    if frames_per_finding < 1:
        raise DustpatrolError("frames per finding must be at least 1")
    gsd = gsd_m or settings.detection.target_gsd_m
    reviewed = session.scalars(
        select(Finding).where(Finding.review.in_(REVIEWED)).order_by(Finding.id)
    ).all()
    if not reviewed:
        raise DustpatrolError(
            "no finding in the database has been confirmed or rejected yet: review findings "
            "in the notice service (POST /findings/{id}/confirm or /reject, or the map) first"
        )
    result = ReviewedExport(data_yaml=out / "data.yaml")
    by_frame: dict[int, list[_Crop]] = {}
    for finding in reviewed:
        if finding.finding_class not in CLASS_NAMES:
            result.skipped.append(f"finding {finding.id}: class {finding.finding_class!r} unknown")
            continue
        for entry in finding.evidence[:frames_per_finding]:
            try:
                frame = evidence_frame(session, finding, str(entry.get("frame_id")))
            except NotFoundError as exc:
                result.skipped.append(f"finding {finding.id}: {exc}")
                continue
            by_frame.setdefault(frame.id, []).append(_Crop(finding, frame))
    folders = dataset_folders(out)
    records: list[dict[str, Any]] = []
    flights: dict[int, list[Finding]] = {}
    for crops in by_frame.values():
        frame = crops[0].frame
        if frame.flight_id not in flights:
            flights[frame.flight_id] = list(
                session.scalars(select(Finding).where(Finding.flight_id == frame.flight_id))
            )
        records += _export_frame(
            settings, frame, crops, flights[frame.flight_id], folders, result, imgsz, gsd,
            val_share,
        )  # fmt: skip
    write_data_yaml(out, CLASS_NAMES)
    (out / "dataset.json").write_text(
        json.dumps(
            {
                "command": list(command),
                "source": "reviewed findings of the notice service",
                "imgsz": imgsz,
                "gsd_m": gsd,
                "images": result.images,
                "labels": result.labels,
                "negatives": result.negatives,
                "skipped": result.skipped,
                "crops": records,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return result


def _export_frame(
    settings: Settings,
    frame: Frame,
    crops: list[_Crop],
    flight_findings: list[Finding],
    folders: dict[tuple[str, str], Path],
    result: ReviewedExport,
    imgsz: int,
    gsd: float,
    val_share: float,
) -> list[dict[str, Any]]:
    """Cut the crops of one frame; returns their records for dataset.json."""
    try:
        with frame_file(settings, frame) as path:
            meta = read_frame_meta(path)
            camera = intrinsics_from_meta(meta)
            pose = pose_from_meta(meta)
            decoded = decode_at_scale(path, min(1.0, frame_gsd_m(camera, pose) / gsd))
    except (NotFoundError, GeoError, VisionError) as exc:
        result.skipped += [f"finding {c.finding.id}: frame {frame.filename}: {exc}" for c in crops]
        return []
    height, width = decoded.bgr.shape[:2]
    scale = 1.0 / decoded.to_full_frame
    frame_box = box(-0.5, -0.5, width - 0.5, height - 0.5)
    seen = shape(json.loads(frame.footprint_geojson)) if frame.footprint_geojson else None
    outlines: dict[int, BaseGeometry] = {}
    for finding in flight_findings:
        where = shape(json.loads(finding.geometry_geojson))
        if seen is not None and not seen.intersects(where):
            continue  # not in this frame: no need to project it
        ground = transform_geometry(where, WGS84, pose.crs)
        outline = _in_pixels(ground, camera, pose, scale)
        if outline is not None and not outline.is_empty:
            outlines[finding.id] = outline.intersection(frame_box)
    records = []
    for crop in crops:
        finding = crop.finding
        outline = outlines.get(finding.id)
        if outline is None or outline.is_empty:
            result.skipped.append(f"finding {finding.id}: not inside frame {frame.filename}")
            continue
        window = _window(outline, width, height, imgsz)
        pending = [
            other.id
            for other in flight_findings
            if other.review == FindingReview.PENDING.value
            and other.id in outlines
            and outlines[other.id].intersection(window).area > 1.0
        ]
        if pending:
            result.skipped.append(
                f"finding {finding.id} in {frame.filename}: the crop shows finding "
                f"{', '.join(map(str, pending))}, not reviewed yet"
            )
            continue
        instances = [
            instance
            for other in flight_findings
            if other.review == FindingReview.CONFIRMED.value and other.id in outlines
            for instance in _instances(other, outlines[other.id], window)
        ]
        split = _split(finding, val_share)
        name = f"f{frame.flight_id}-{frame.sha256[:12]}-finding{finding.id}"
        image = _cut(decoded.bgr, window, imgsz)
        if not cv2.imwrite(str(folders[("images", split)] / f"{name}.jpg"), image):
            raise DustpatrolError(f"could not write into {folders[('images', split)]}")
        lines = yolo_label_lines(instances, imgsz, imgsz)
        (folders[("labels", split)] / f"{name}.txt").write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )
        result.images[split] += 1
        result.labels += len(instances)
        result.negatives += not instances
        records.append(
            {
                "image": f"images/{split}/{name}.jpg",
                "finding": finding.id,
                "review": finding.review,
                "class": finding.finding_class,
                "frame": frame.filename,
                "frame_sha256": frame.sha256,
                "labels": len(instances),
                # where the crop lies in the frame decoded at the crop's resolution
                "decoded_size": [width, height],
                "window": [math.ceil(v) for v in window.bounds[:2]],
            }
        )
    return records


def _in_pixels(
    ground: BaseGeometry, camera: CameraIntrinsics, pose: CameraPose, scale: float
) -> BaseGeometry | None:
    """A ground (multi)polygon in decoded-frame pixels; None if part of it is behind the
    camera. Holes are dropped (YOLO-seg cannot label them)."""
    parts = []
    for polygon in getattr(ground, "geoms", [ground]):
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        pixels = ground_to_pixel(np.asarray(polygon.exterior.coords), camera, pose)
        if not np.isfinite(pixels).all():
            return None
        # full-frame pixel centres to decoded-frame pixel centres
        parts.append(Polygon((pixels + 0.5) * scale - 0.5).buffer(0))
    return shapely.union_all(parts) if parts else None


def _window(outline: BaseGeometry, width: int, height: int, imgsz: int) -> Polygon:
    """The imgsz square centred on ``outline``, moved inside the frame where it fits."""
    centre = outline.centroid
    left = min(max(0, round(centre.x - imgsz / 2)), max(0, width - imgsz))
    top = min(max(0, round(centre.y - imgsz / 2)), max(0, height - imgsz))
    return box(left - 0.5, top - 0.5, left + imgsz - 0.5, top + imgsz - 0.5)


def _cut(image: np.ndarray, window: Polygon, imgsz: int) -> np.ndarray:
    left, top = (math.ceil(v) for v in window.bounds[:2])
    piece = image[top : top + imgsz, left : left + imgsz]
    if piece.shape[:2] == (imgsz, imgsz):
        return np.ascontiguousarray(piece)
    padded = np.full((imgsz, imgsz, 3), PAD_GREY, dtype=np.uint8)
    padded[: piece.shape[0], : piece.shape[1]] = piece
    return padded


def _instances(finding: Finding, outline: BaseGeometry, window: Polygon) -> list[Instance]:
    """The parts of ``outline`` inside ``window``, in the crop's pixels."""
    left, top = (math.ceil(v) for v in window.bounds[:2])
    inside = outline.intersection(window)
    class_id = CLASS_NAMES.index(finding.finding_class)
    instances = []
    for part in getattr(inside, "geoms", [inside]):
        if isinstance(part, Polygon) and part.area >= 4.0:
            ring = np.asarray(part.exterior.coords)[:-1] - [left, top]
            instances.append(Instance(class_id, ring.astype(np.float64)))
    return instances


def _split(finding: Finding, val_share: float) -> str:
    """``val`` for a stable share of the sites (by a hash of the site), else ``train``."""
    key = (
        f"site-{finding.site_id}" if finding.site_id is not None else f"flight-{finding.flight_id}"
    )
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_share else "train"
