"""Preview images for people: a frame beside the same frame with its class mask painted on."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from sim.camera import PoseNoise, camera_preset
from sim.errors import SimError
from sim.kinds import GnssMode, GroundTruthClass
from sim.shots import Shot, pose_at, shoot
from sim.world import District

# BGR colours of the classes in previews.
CLASS_COLOURS = {
    GroundTruthClass.EXPOSED_SOIL: (40, 40, 230),
    GroundTruthClass.ROAD_DUST: (30, 220, 240),
    GroundTruthClass.COVERED_SOIL: (60, 200, 60),
}


def overlay(shot: Shot) -> np.ndarray:
    """The frame and, beside it, the frame with each ground-truth class tinted."""
    image = cv2.imdecode(np.frombuffer(shot.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SimError("the frame's JPEG could not be decoded")
    tinted = image.copy()
    for cls, colour in CLASS_COLOURS.items():
        selected = shot.class_mask == int(cls)
        tinted[selected] = (0.55 * tinted[selected] + 0.45 * np.array(colour)).astype(np.uint8)
    return np.hstack([image, tinted])


def write_previews(
    district: District,
    folder: Path,
    count: int,
    scale: float,
    on_frame: Callable[[], object] = lambda: None,
) -> list[Path]:
    """Nadir and oblique previews over the first ``count`` non-compliant sites."""
    folder.mkdir(parents=True, exist_ok=True)
    camera = camera_preset("m3e", scale)
    noise = PoseNoise(GnssMode.PERFECT)
    sites = [s for s in district.sites if not s.compliant][:count] or list(district.sites[:count])
    paths = []
    for index, site in enumerate(sites):
        centre = site.geometry.centroid
        yaw = 30.0 * index
        nadir = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0, gimbal_yaw_deg=yaw),
            camera,
            noise,
        )
        on_frame()
        back = 100.0 / math.tan(math.radians(40.0))
        oblique_pose = pose_at(
            district,
            centre.x - back * math.sin(math.radians(yaw)),
            centre.y - back * math.cos(math.radians(yaw)),
            100.0,
            gimbal_yaw_deg=yaw,
            gimbal_pitch_deg=-40.0,
        )
        oblique = shoot(district, oblique_pose, camera, noise)
        on_frame()
        for label, shot in (("nadir", nadir), ("oblique", oblique)):
            path = folder / f"{site.site_id}-{site.kind.value}-{label}.png"
            if not cv2.imwrite(str(path), overlay(shot)):
                raise SimError(f"could not write {path}")
            paths.append(path)
    return paths
