"""Evidence crops: the part of a frame where the pipeline saw a finding, as a small JPEG.

A finding's evidence names a frame by the id the pipeline gave it (the file name, with or
without its extension, or the frame's SHA-256) and a pixel box ``[x0, y0, x1, y1]`` in that
frame. The crop shows the box with a margin around it and the box outlined in red; crops are
cached on disk next to the frames, keyed by content hash and box, so a second request costs a
file read.
"""

from __future__ import annotations

import io
import math
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.errors import ConflictError, InvalidInputError, NotFoundError
from api.models.flights import Frame
from api.models.notices import Finding
from api.services.frames import frame_file
from dustpatrol.settings import Settings
from dustpatrol.storage import MissingObjectError, content_key, open_storage

CROP_MAX_SIDE_PX = 640
MARGIN_SHARE = 0.25  # of the box's larger side, on each side
MIN_MARGIN_PX = 24


def evidence_url(finding_id: int, index: int) -> str:
    """Where evidence ``index`` of a finding is served as an image."""
    return f"/findings/{finding_id}/evidence/{index}"


def evidence_frame(session: Session, finding: Finding, frame_id: str) -> Frame:
    """The uploaded frame of ``finding``'s flight that ``frame_id`` names."""
    stem = PurePosixPath(frame_id).stem
    frame = session.scalar(
        select(Frame)
        .where(
            Frame.flight_id == finding.flight_id,
            or_(
                Frame.filename == frame_id,
                Frame.sha256 == frame_id,
                Frame.filename.in_([f"{stem}.jpg", f"{stem}.JPG", f"{stem}.jpeg", f"{stem}.JPEG"]),
            ),
        )
        .order_by(Frame.id)
    )
    if frame is None:
        raise NotFoundError(
            f"frame {frame_id!r} of finding {finding.id}'s evidence was never uploaded to "
            f"flight {finding.flight_id}: upload it with POST /flights/{finding.flight_id}/frames"
        )
    return frame


def pixel_box(entry: dict[str, Any], where: str) -> tuple[int, int, int, int]:
    box = entry.get("pixel_box")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box
        )
        or not (box[0] < box[2] and box[1] < box[3])
    ):
        raise InvalidInputError(f"{where}: pixel_box must be [x0, y0, x1, y1] with x0<x1, y0<y1")
    x0, y0, x1, y1 = (round(v) for v in box)
    return x0, y0, x1, y1


def evidence_entry(finding: Finding, index: int) -> dict[str, Any]:
    if not 0 <= index < len(finding.evidence):
        raise NotFoundError(
            f"finding {finding.id} has {len(finding.evidence)} evidence entries "
            f"(0..{len(finding.evidence) - 1}); there is no entry {index}"
        )
    entry = finding.evidence[index]
    if not isinstance(entry, dict) or not isinstance(entry.get("frame_id"), str):
        raise InvalidInputError(f"finding {finding.id} evidence {index} names no frame_id")
    return entry


def evidence_crop(session: Session, settings: Settings, finding: Finding, index: int) -> bytes:
    """The JPEG crop of evidence ``index`` of ``finding`` (cached on disk)."""
    entry = evidence_entry(finding, index)
    where = f"finding {finding.id} evidence {index}"
    box = pixel_box(entry, where)
    frame = evidence_frame(session, finding, entry["frame_id"])
    storage = open_storage(settings)
    cache = content_key("crops", frame.sha256, f"-{'-'.join(str(v) for v in box)}.jpg")
    try:
        return storage.get(cache)
    except MissingObjectError:
        pass
    with frame_file(settings, frame) as source:
        data = render_crop(source, box, where)
    storage.put(cache, data)
    return data


def render_crop(source: Path, box: tuple[int, int, int, int], where: str) -> bytes:
    """The frame around ``box`` with the box outlined, at most CROP_MAX_SIDE_PX a side. The
    frame is decoded only at the reduction the crop needs (JPEG DCT scaling), never whole
    at full size."""
    x0, y0, x1, y1 = box
    try:
        with Image.open(source) as image:
            width, height = image.size
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                raise InvalidInputError(
                    f"{where}: pixel_box {list(box)} lies outside the {width}x{height} frame"
                )
            margin = max(MIN_MARGIN_PX, int(MARGIN_SHARE * max(x1 - x0, y1 - y0)))
            left, top = max(0, x0 - margin), max(0, y0 - margin)
            right, bottom = min(width, x1 + margin), min(height, y1 + margin)
            wanted = min(1.0, CROP_MAX_SIDE_PX / max(right - left, bottom - top))
            image.draft("RGB", (max(1, round(width * wanted)), max(1, round(height * wanted))))
            factor = image.size[0] / width  # 1, 1/2, 1/4 or 1/8: what the decoder gave
            origin_x, origin_y = math.floor(left * factor), math.floor(top * factor)
            crop = image.convert("RGB").crop(
                (origin_x, origin_y, math.ceil(right * factor), math.ceil(bottom * factor))
            )
    except (OSError, SyntaxError) as exc:
        raise ConflictError(
            f"{where}: the stored frame cannot be decoded ({exc}); upload it again"
        ) from None
    scale = min(1.0, CROP_MAX_SIDE_PX / max(crop.size))
    if scale < 1.0:
        crop = crop.resize(
            (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
            Image.Resampling.LANCZOS,
        )
    outline = [
        (x0 * factor - origin_x) * scale,
        (y0 * factor - origin_y) * scale,
        (x1 * factor - origin_x) * scale - 1,
        (y1 * factor - origin_y) * scale - 1,
    ]
    ImageDraw.Draw(crop).rectangle(outline, outline=(230, 30, 30), width=3)
    buffer = io.BytesIO()
    crop.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
