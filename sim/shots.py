"""Taking pictures of the simulated district: render, add pose noise, write JPEG + truth."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from shapely.geometry import Polygon, mapping

from sim.camera import (
    CameraModel,
    Pose,
    PoseError,
    PoseNoise,
    ViewGeometry,
    camera_preset,
    quantize_pose,
    rotation_world_from_camera,
    wrap_degrees,
)
from sim.errors import SimError
from sim.kinds import GnssMode
from sim.metadata import exif_bytes, insert_app1_segments, xmp_packet
from sim.render import Rendering, render
from sim.world import District

JPEG_QUALITY = 92


@dataclass(frozen=True, slots=True)
class Shot:
    """One simulated frame: the JPEG as the drone writes it, and the truth beside it."""

    jpeg: bytes
    class_mask: np.ndarray  # uint8 GroundTruthClass values, 255 = sky
    true_pose: Pose
    reported_pose: Pose
    error: PoseError
    camera: CameraModel
    footprint_utm: Polygon


def pose_at(
    district: District,
    east_m: float,
    north_m: float,
    relative_altitude_m: float,
    *,
    gimbal_yaw_deg: float = 0.0,
    gimbal_pitch_deg: float = -90.0,
    gimbal_roll_deg: float = 0.0,
    time_utc: datetime | None = None,
) -> Pose:
    """A pose above the UTM point (east_m, north_m) of ``district``; flight yaw follows gimbal."""
    lon, lat = district.to_lonlat().transform(east_m, north_m)
    return Pose(
        lat_deg=float(lat),
        lon_deg=float(lon),
        altitude_ellipsoid_m=district.params.ground_ellipsoid_height_m + relative_altitude_m,
        relative_altitude_m=relative_altitude_m,
        gimbal_yaw_deg=gimbal_yaw_deg,
        gimbal_pitch_deg=gimbal_pitch_deg,
        gimbal_roll_deg=gimbal_roll_deg,
        flight_yaw_deg=gimbal_yaw_deg,
        time_utc=time_utc or datetime(2026, 11, 23, 2, 0, 0, tzinfo=UTC),
    )


def view_for(district: District, camera: CameraModel, pose: Pose) -> ViewGeometry:
    """Where ``pose`` puts ``camera`` in the district's UTM frame."""
    pose.validate()
    east, north = district.from_lonlat().transform(pose.lon_deg, pose.lat_deg)
    rotation = rotation_world_from_camera(
        pose.gimbal_yaw_deg, pose.gimbal_pitch_deg, pose.gimbal_roll_deg
    )
    return ViewGeometry(camera, rotation, (float(east), float(north)), pose.relative_altitude_m)


def reported_pose(district: District, true_pose: Pose, error: PoseError) -> Pose:
    """What the drone's metadata says, given the true pose and the error drawn for it."""
    east, north = district.from_lonlat().transform(true_pose.lon_deg, true_pose.lat_deg)
    lon, lat = district.to_lonlat().transform(east + error.east_m, north + error.north_m)
    return quantize_pose(
        replace(
            true_pose,
            lat_deg=float(lat),
            lon_deg=float(lon),
            altitude_ellipsoid_m=true_pose.altitude_ellipsoid_m + error.up_m,
            relative_altitude_m=true_pose.relative_altitude_m + error.up_m,
            gimbal_yaw_deg=wrap_degrees(true_pose.gimbal_yaw_deg + error.yaw_deg),
            gimbal_pitch_deg=max(-90.0, true_pose.gimbal_pitch_deg + error.pitch_deg),
            gimbal_roll_deg=true_pose.gimbal_roll_deg + error.roll_deg,
            flight_yaw_deg=wrap_degrees(true_pose.flight_yaw_deg + error.yaw_deg),
        )
    )


def shoot(
    district: District,
    pose: Pose,
    camera: CameraModel | None = None,
    noise: PoseNoise | None = None,
    seed: int = 0,
) -> Shot:
    """Render the frame seen from the true ``pose`` and tag it with a noisy reported pose.

    ``seed`` drives the pose error and the sensor noise, so the same arguments always give
    byte-identical JPEGs.
    """
    return shoot_tagged(district, pose, camera, [noise or PoseNoise()], seed)[0]


def shoot_tagged(
    district: District,
    pose: Pose,
    camera: CameraModel | None,
    noises: Sequence[PoseNoise],
    seed: int = 0,
) -> list[Shot]:
    """The frame seen from ``pose`` once per noise model (e.g. each GNSS mode): each shot is
    byte-identical to `shoot` with that model, but a picture is rendered only once when the
    models share it (they do, except `GnssMode.PERFECT` beside the others)."""
    if seed < 0:
        raise SimError(f"seed must be a non-negative integer, got {seed}")
    camera = camera or camera_preset("m3e")
    true_pose = quantize_pose(pose)
    view = view_for(district, camera, true_pose)
    pictures: dict[int, tuple[Rendering, bytes]] = {}
    shots = []
    for noise in noises:
        rng = np.random.default_rng([seed, 0x5EED])
        error = noise.draw(rng)
        if error.gnss_mode is GnssMode.PERFECT:
            reported = true_pose
        else:
            reported = reported_pose(district, true_pose, error)
        render_seed = int(rng.integers(0, 2**31))
        if render_seed not in pictures:
            rendering = render(district, view, seed=render_seed)
            ok, encoded = cv2.imencode(
                ".jpg", rendering.bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            )
            if not ok:
                raise SimError("JPEG encoding failed")
            pictures[render_seed] = (rendering, encoded.tobytes())
        rendering, picture = pictures[render_seed]
        jpeg = insert_app1_segments(
            picture, [exif_bytes(camera, reported), xmp_packet(camera, reported, error)]
        )
        shots.append(
            Shot(
                jpeg=jpeg,
                class_mask=rendering.class_mask,
                true_pose=true_pose,
                reported_pose=reported,
                error=error,
                camera=camera,
                footprint_utm=rendering.footprint,
            )
        )
    return shots


def render_frame(
    district: District,
    pose: Pose,
    camera: CameraModel | None = None,
    noise: PoseNoise | None = None,
    seed: int = 0,
) -> bytes:
    """JPEG bytes (EXIF + DJI XMP) of the frame seen from ``pose``; see `shoot`."""
    return shoot(district, pose, camera, noise, seed).jpeg


def _pose_json(pose: Pose) -> dict[str, Any]:
    data = asdict(pose)
    data["time_utc"] = pose.time_utc.isoformat()
    return data


def write_shot(shot: Shot, district: District, folder: Path, name: str) -> Path:
    """Write name.jpg, name.mask.png (class ids) and name.truth.json; return the JPEG path."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg_path = folder / f"{name}.jpg"
    if not cv2.imwrite(str(folder / f"{name}.mask.png"), shot.class_mask):
        raise SimError(f"could not write the class mask into {folder}")
    footprint = district.geometry_to_lonlat(shot.footprint_utm)
    truth = {
        "camera": asdict(shot.camera),
        "true_pose": _pose_json(shot.true_pose),
        "reported_pose": _pose_json(shot.reported_pose),
        "pose_error": {**asdict(shot.error), "gnss_mode": shot.error.gnss_mode.value},
        "footprint_wgs84": mapping(footprint),
        "class_ids": {
            "background": 0,
            "exposed_soil": 1,
            "road_dust": 2,
            "covered_soil": 3,
            "sky": 255,
        },
    }
    (folder / f"{name}.truth.json").write_text(json.dumps(truth, indent=2), encoding="utf-8")
    # The JPEG last, whole or not at all: whoever watches the folder for new frames (a live
    # upload during the flight) never reads half a file or a frame without its truth.
    partial = folder / f".{name}.jpg.part"
    partial.write_bytes(shot.jpeg)
    partial.replace(jpeg_path)
    return jpeg_path
