"""The analysis pipeline: frames in, findings out.

For each frame: read its metadata (EXIF GPS, DJI XMP, lens), detect at the target ground
resolution, place every detection's outline on the ground (UTM) with its uncertainty. Then
match the ground polygons to the registered sites (with a tolerance from their uncertainty),
merge what several frames saw of the same patch, and report per site how much was seen.

`vision` hands over pixel polygons as numpy arrays and `geo` takes them from there: the two
never import each other; this module is where they meet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from dustpatrol.errors import DustpatrolError
from geo.crs import utm_crs_for
from geo.errors import GeoError
from geo.frames import read_frame_meta
from geo.georef import (
    CameraIntrinsics,
    CameraPose,
    footprint,
    georeference_polygon,
    intrinsics_from_meta,
    pose_from_meta,
)
from geo.matching import (
    Finding,
    MatchFlag,
    Observation,
    SiteCoverage,
    SiteIndex,
    match_findings,
    merge_observations,
    site_coverage,
)
from vision.detect import Detector
from vision.errors import VisionError

FRAME_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """A frame kept out of the analysis, and why."""

    frame_id: str
    reason: str


@dataclass(slots=True)
class FlightAnalysis:
    """What a set of frames showed."""

    crs: CRS
    findings: list[Finding] = field(default_factory=list)
    coverage: list[SiteCoverage] = field(default_factory=list)
    rejected: list[RejectedFrame] = field(default_factory=list)
    frames_analysed: int = 0
    detections: int = 0
    off_site: int = 0


def frame_files(folder: Path) -> list[Path]:
    """The JPEG frames of ``folder`` in name order."""
    if not folder.is_dir():
        raise DustpatrolError(f"{folder} is not a folder of frames")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not frames:
        raise DustpatrolError(f"{folder} holds no JPEG frames (.jpg, .jpeg)")
    return frames


def frame_gsd_m(camera: CameraIntrinsics, pose: CameraPose) -> float:
    """Ground sample distance at the image centre, metres per pixel: the slant distance to
    the ground along the optical axis over the focal length."""
    pitch = math.radians(pose.pitch_deg)
    down = max(math.sin(-pitch), 0.05)  # share of the optical axis pointing down
    return pose.height_m / down / camera.focal_px


def analyze_frames(
    frames: Iterable[Path],
    sites: gpd.GeoDataFrame,
    detector: Detector,
    *,
    target_gsd_m: float | None = None,
    tolerance_floor_m: float = 0.0,
    on_frame: Callable[[Path], object] = lambda path: None,
) -> FlightAnalysis:
    """Detect, georeference, match and merge over ``frames``; see the module docstring.

    A frame whose metadata cannot place it, or whose image cannot be decoded, is listed in
    ``rejected`` with the reason; the others go on.
    """
    placed: list[Observation] = []  # on the ground, not yet matched to a site
    footprints: list[BaseGeometry] = []
    crs: CRS | None = None
    rejected: list[RejectedFrame] = []
    analysed = 0
    names = detector.class_names
    for path in frames:
        frame_id = path.name
        try:
            meta = read_frame_meta(path)
            crs = crs or utm_crs_for(meta.lon_deg, meta.lat_deg)
            camera = intrinsics_from_meta(meta)
            pose = pose_from_meta(meta, crs=crs)
            found = detector.detect(path, frame_gsd_m(camera, pose), target_gsd_m)
            footprints.append(footprint(camera, pose))
        except (GeoError, VisionError) as exc:
            rejected.append(RejectedFrame(frame_id, str(exc)))
            on_frame(path)
            continue
        analysed += 1
        for number in range(len(found)):
            rings = found.rings[number]
            try:
                ground = georeference_polygon(rings[0], camera, pose, holes_px=list(rings[1:]))
            except GeoError:
                continue  # an outline reaching above the horizon: not on the ground
            polygon = ground.polygon if ground.polygon.is_valid else ground.polygon.buffer(0)
            if polygon.is_empty:
                continue
            x0, y0, x1, y1 = (round(float(v)) for v in found.xyxy[number])
            placed.append(
                Observation(
                    frame_id=frame_id,
                    class_name=names[int(found.class_id[number])],
                    polygon=polygon,
                    confidence=float(found.confidence[number]),
                    uncertainty_m=ground.uncertainty_m,
                    pixel_box=(x0, y0, x1, y1),
                )
            )
        on_frame(path)
    if crs is None:  # no frame could be placed: nothing to match
        return FlightAnalysis(crs=CRS.from_epsg(4326), rejected=rejected)
    result = FlightAnalysis(
        crs=crs, rejected=rejected, frames_analysed=analysed, detections=len(placed)
    )
    if not len(sites):
        return result
    site_index = SiteIndex.build(sites, crs)
    if placed:
        polygons = np.array([o.polygon for o in placed], dtype=object)
        tolerance = np.array([max(o.uncertainty_m, tolerance_floor_m) for o in placed])
        matches = match_findings(polygons, site_index, tolerance, crs)
        observations = []
        for position, observation in enumerate(placed):
            flag = MatchFlag(int(matches.flag[position]))
            if flag is MatchFlag.OFF_SITE:
                result.off_site += 1
                continue
            observations.append(
                replace(
                    observation,
                    polygon=matches.geometry[position],
                    site_id=str(matches.site_id[position]),
                    flag=flag,
                )
            )
        result.findings = merge_observations(observations, crs)
    result.coverage = site_coverage(sites, footprints, result.findings, crs)
    return result
