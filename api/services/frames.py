"""Frames: validated, content-addressed storage, and the metadata/footprint job."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from shapely.geometry import mapping
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import InvalidInputError, NotFoundError
from api.jobs import PermanentJobError, enqueue, handler
from api.models.flights import Flight, Frame
from dustpatrol.settings import Settings
from dustpatrol.storage import MissingObjectError, content_key, open_storage
from geo.crs import WGS84, transform_geometry
from geo.errors import GeoError
from geo.frames import FrameMeta, read_frame_meta
from geo.georef import CameraIntrinsics, CameraPose, footprint, intrinsics_from_meta, pose_from_meta

MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_FRAME_PIXELS = 100_000_000  # the largest survey cameras take 100 MP; a 20 MP drone 20
FRAME_METADATA_JOB = "frame_metadata"
FRAME_DETECT_JOB = "frame_detect"  # run by api.services.analysis


def frame_key(sha256: str) -> str:
    """Where a frame with this content hash is stored."""
    return content_key("frames", sha256)


@contextlib.contextmanager
def frame_file(settings: Settings, frame: Frame) -> Iterator[Path]:
    """The stored JPEG of ``frame`` as a local file (a temporary copy when the store is
    object storage); a 404 if the store no longer has it."""
    try:
        with open_storage(settings).as_file(frame_key(frame.sha256)) as path:
            yield path
    except MissingObjectError:
        raise NotFoundError(f"the stored file of frame {frame.filename} is missing") from None


def frame_camera(
    path: Path, name: str, settings: Settings
) -> tuple[FrameMeta, CameraIntrinsics, CameraPose]:
    """A frame's metadata, and the camera and pose it gives (GeoError if it can't)."""
    meta = read_frame_meta(path, name=name)
    pose = pose_from_meta(
        meta,
        yaw_std_deg=settings.georeferencing.yaw_std_deg,
        tilt_std_deg=settings.georeferencing.tilt_std_deg,
    )
    return meta, intrinsics_from_meta(meta), pose


def validate_jpeg(data: bytes, filename: str) -> None:
    """Refuse what is not a whole JPEG of a size real cameras produce. The image is decoded
    to the end (at 1/8 scale, cheap), so a truncated file is refused here and never reaches
    detection or an evidence crop."""
    if len(data) > MAX_FRAME_BYTES:
        raise InvalidInputError(f"{filename}: larger than {MAX_FRAME_BYTES // 2**20} MiB")
    if not data.startswith(b"\xff\xd8\xff"):
        raise InvalidInputError(f"{filename}: not a JPEG (frames must be the camera's JPEG files)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_FRAME_PIXELS:
                    raise InvalidInputError(
                        f"{filename}: {width}x{height} pixels: more pixels than any survey camera "
                        f"takes (at most {MAX_FRAME_PIXELS // 1_000_000} MP)"
                    )
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError(
            f"{filename}: its header claims more pixels than any survey camera takes (at "
            f"most {MAX_FRAME_PIXELS // 1_000_000} MP): not a camera frame"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        reason = "truncated" if "truncated" in str(exc) else "damaged"
        raise InvalidInputError(
            f"{filename}: a {reason} JPEG ({exc}); copy it again from the drone"
        ) from None


def store_frame(
    session: Session, settings: Settings, flight_id: int, data: bytes, filename: str
) -> tuple[Frame, int | None]:
    """Store a frame once per flight; returns it and the job that reads its metadata
    (None when the same content was uploaded to this flight before)."""
    if session.get(Flight, flight_id) is None:
        raise NotFoundError(f"no flight {flight_id}")
    validate_jpeg(data, filename)
    digest = hashlib.sha256(data).hexdigest()
    existing = session.scalar(
        select(Frame).where(Frame.flight_id == flight_id, Frame.sha256 == digest)
    )
    if existing is not None:
        return existing, None
    open_storage(settings).put_once(frame_key(digest), data)
    frame = Frame(flight_id=flight_id, sha256=digest, filename=filename[:300], size_bytes=len(data))
    session.add(frame)
    session.flush()
    job = enqueue(session, FRAME_METADATA_JOB, {"frame_id": frame.id})
    session.commit()
    return frame, job.id


@handler(FRAME_METADATA_JOB)
def read_metadata(session: Session, payload: dict[str, Any], settings: Settings) -> None:
    """Read the frame's position and attitude and compute its ground footprint."""
    frame = session.get(Frame, payload["frame_id"])
    if frame is None:
        raise PermanentJobError(f"frame {payload['frame_id']} no longer exists")
    try:
        with frame_file(settings, frame) as path:
            meta, camera, pose = frame_camera(path, frame.filename, settings)
        ground = footprint(camera, pose, settings.georeferencing.ground_height_m)
    except GeoError as exc:
        frame.status = "failed"
        frame.error = str(exc)
        session.commit()
        raise PermanentJobError(str(exc)) from None
    frame.lat_deg, frame.lon_deg = meta.lat_deg, meta.lon_deg
    frame.relative_alt_m = meta.relative_altitude_m
    frame.position_quality = meta.position_quality.value
    frame.captured_at = meta.captured_at
    frame.footprint_geojson = json.dumps(mapping(transform_geometry(ground, pose.crs, WGS84)))
    frame.status = "ready"
    frame.error = None
    if settings.detection.in_service:
        frame.analysis = "pending"
        enqueue(session, FRAME_DETECT_JOB, {"frame_id": frame.id})
    session.commit()
