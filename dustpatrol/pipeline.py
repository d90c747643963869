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
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from dustpatrol.errors import DustpatrolError
from dustpatrol.quality import FrameQuality, horizon_in_view
from dustpatrol.settings import DetectionSettings, QualitySettings
from geo.crs import utm_crs_for
from geo.errors import GeoError
from geo.frames import read_frame_meta
from geo.georef import (
    CameraIntrinsics,
    CameraPose,
    footprint,
    georeference_polygon,
    ground_to_pixel,
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
from geo.mrk import MrkPositions
from vision.detect import DecodedFrame, Detector
from vision.errors import VisionError

FRAME_SUFFIXES = (".jpg", ".jpeg")
PROBLEM_CLASSES = ("exposed_soil", "road_dust")
# With `sites_only`, ground this far beyond a site (and the match tolerance) is still
# detected: a single-GNSS frame may be placed metres off, and soil at a site's edge matters.
SITE_MARGIN_M = 15.0


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """A frame kept out of the analysis, and why."""

    frame_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PreparedFrame:
    """A frame that passed the quality checks, decoded at the analysis resolution."""

    frame_id: str
    camera: CameraIntrinsics
    pose: CameraPose
    footprint: BaseGeometry
    decoded: DecodedFrame
    region: NDArray[np.bool_] | None = None  # pixels to detect in (None: all of them)


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
    placed_by_mrk: int = 0  # frames whose position came from a DJI .MRK file
    not_in_mrk: list[str] = field(default_factory=list)  # frames the .MRK did not name


def site_status(coverage: SiteCoverage, findings: Iterable[Finding], min_coverage: float) -> str:
    """What a patrol can say of a site: ``problems`` when it found exposed soil or road dust
    there, else ``compliant`` if it saw (nearly) all of it, else ``not inspected``: a site seen
    in part is never called compliant."""
    if any(f.site_id == coverage.site_id and f.class_name in PROBLEM_CLASSES for f in findings):
        return "problems"
    return "compliant" if coverage.coverage_ratio >= min_coverage else "not inspected"


_detectors: dict[tuple[Path, int, float | None, float], Detector] = {}
_detectors_lock = threading.Lock()


def shared_detector(settings: DetectionSettings) -> Detector:
    """One detector per model and settings in this process, made on first use (loading a
    model takes a while; the service's jobs share it). DustpatrolError if it cannot load."""
    key = (settings.model_path.resolve(), settings.threads, settings.min_confidence,
           settings.tile_overlap)  # fmt: skip
    with _detectors_lock:
        if key not in _detectors:
            try:
                _detectors[key] = Detector(
                    settings.model_path,
                    threads=settings.threads,
                    conf=settings.min_confidence,
                    overlap=settings.tile_overlap,
                )
            except VisionError as exc:
                raise DustpatrolError(str(exc)) from None
        return _detectors[key]


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


class FlightAnalyzer:
    """The pipeline fed one frame at a time (as frames arrive during a flight); `finish`
    matches and merges what the frames saw. `analyze_frames` runs it over a folder."""

    def __init__(
        self,
        detector: Detector,
        sites: gpd.GeoDataFrame,
        *,
        target_gsd_m: float | None = None,
        tolerance_floor_m: float = 0.0,
        quality: QualitySettings | None = None,
        positions: MrkPositions | None = None,
        sites_only: bool = False,
        vote_share: float = 0.0,
        vote_max_uncertainty_m: float = math.inf,
    ) -> None:
        self.detector = detector
        # > 0: a finding's outline is where that share of the frames that saw it agree
        self.vote_share = vote_share
        self.vote_max_uncertainty_m = vote_max_uncertainty_m
        # Detect only in the tiles that show a site (with `SITE_MARGIN_M`): faster over
        # surveys that see much countryside, but no off-site findings for analysts.
        self.sites_only = sites_only
        self._site_reach: BaseGeometry | None = None
        self.positions = positions  # RTK positions of a DJI .MRK file, better than the EXIF
        self.placed_by_mrk = 0
        self.not_in_mrk: list[str] = []  # frames an MRK file was there for but did not name
        self.sites = sites
        self.target_gsd_m = target_gsd_m
        self.tolerance_floor_m = tolerance_floor_m
        self.quality = FrameQuality(quality or QualitySettings())
        self.crs: CRS | None = None
        self._sites_union: BaseGeometry | None = None
        self.placed: list[Observation] = []  # on the ground, not yet matched to a site
        self.footprints: dict[str, BaseGeometry] = {}  # what each analysed frame saw
        self.rejected: list[RejectedFrame] = []
        self.analysed = 0

    def add_frame(self, path: Path, frame_id: str | None = None) -> list[Observation]:
        """Detect in one frame and place its detections on the ground; a frame that cannot be
        placed or decoded is listed in ``rejected`` with the reason (and returns nothing).
        ``frame_id`` names the frame in evidence (default: its file name)."""
        return self.place(self.prepare(path, frame_id))

    def prepare(self, path: Path, frame_id: str | None = None) -> PreparedFrame | None:
        """The first half of `add_frame`: metadata, quality checks and the decode at the
        analysis resolution; None (and the reason in ``rejected``) for a frame kept out.
        Call it for frames in flight order, from one thread at a time (duplicates are
        judged against the frames prepared before)."""
        frame_id = frame_id or path.name
        try:
            meta = read_frame_meta(path)
            if self.positions is not None:
                meta, named = self.positions.position(meta, path.name)
                if named:
                    self.placed_by_mrk += 1
                else:
                    self.not_in_mrk.append(frame_id)
            if self.crs is None:
                self.crs = utm_crs_for(meta.lon_deg, meta.lat_deg)
                if len(self.sites):
                    self._sites_union = shapely.union_all(self.sites.to_crs(self.crs).geometry)
            camera = intrinsics_from_meta(meta)
            pose = pose_from_meta(meta, crs=self.crs)
            seen = None if horizon_in_view(camera, pose) else footprint(camera, pose)
            problem = self.quality.metadata_problem(
                meta, camera, pose, seen, self._sites_union
            ) or self.quality.image_problem(path)
            if problem is not None:
                self.rejected.append(RejectedFrame(frame_id, problem))
                return None
            assert seen is not None  # a frame with the horizon in view was rejected
            decoded = self.detector.decode(path, frame_gsd_m(camera, pose), self.target_gsd_m)
        except (GeoError, VisionError) as exc:
            self.rejected.append(RejectedFrame(frame_id, str(exc)))
            return None
        region = self._site_region(camera, pose, seen, decoded) if self.sites_only else None
        return PreparedFrame(frame_id, camera, pose, seen, decoded, region)

    def _site_region(
        self, camera: CameraIntrinsics, pose: CameraPose, seen: BaseGeometry, frame: DecodedFrame
    ) -> NDArray[np.bool_] | None:
        """The pixels of the decoded frame within reach of a registered site (None: all)."""
        height, width = frame.bgr.shape[:2]
        if self._sites_union is None:
            return np.zeros((height, width), dtype=bool)
        if self._site_reach is None:
            self._site_reach = self._sites_union.buffer(self.tolerance_floor_m + SITE_MARGIN_M)
        near = shapely.segmentize(self._site_reach.intersection(seen), 2.0)
        mask = np.zeros((height, width), dtype=np.uint8)
        for polygon in getattr(near, "geoms", [near]):
            if polygon.is_empty or polygon.geom_type != "Polygon":
                continue
            rings = []
            for ring in (polygon.exterior, *polygon.interiors):
                pixels = ground_to_pixel(np.asarray(ring.coords), camera, pose)
                if not np.isfinite(pixels).all():  # behind the camera: detect everything
                    return None
                rings.append(np.round(pixels / frame.to_full_frame * 16).astype(np.int32))
            cv2.fillPoly(mask, rings, 1, cv2.LINE_8, 4)  # even-odd: holes stay empty
        return mask.astype(bool)

    def place(self, prepared: PreparedFrame | None) -> list[Observation]:
        """The second half of `add_frame`: detection and georeferencing of a prepared frame."""
        if prepared is None:
            return []
        try:
            found = self.detector.detect_image(
                prepared.decoded.bgr, prepared.decoded.to_full_frame, prepared.region
            )
        except VisionError as exc:
            self.rejected.append(RejectedFrame(prepared.frame_id, str(exc)))
            return []
        self.footprints[prepared.frame_id] = prepared.footprint
        self.analysed += 1
        names = self.detector.class_names
        camera, pose = prepared.camera, prepared.pose
        observations = []
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
            observations.append(
                Observation(
                    frame_id=prepared.frame_id,
                    class_name=names[int(found.class_id[number])],
                    polygon=polygon,
                    confidence=float(found.confidence[number]),
                    uncertainty_m=ground.uncertainty_m,
                    pixel_box=(x0, y0, x1, y1),
                )
            )
        self.placed.extend(observations)
        return observations

    def finish(self) -> FlightAnalysis:
        """Match everything placed so far to the sites, merge across frames, measure coverage."""
        if self.crs is None:  # no frame could be placed: nothing to match
            return FlightAnalysis(crs=CRS.from_epsg(4326), rejected=list(self.rejected))
        result = match_and_merge(
            self.placed,
            self.footprints,
            self.sites,
            self.crs,
            self.tolerance_floor_m,
            vote_share=self.vote_share,
            vote_max_uncertainty_m=self.vote_max_uncertainty_m,
        )
        result.rejected = list(self.rejected)
        result.frames_analysed = self.analysed
        result.placed_by_mrk = self.placed_by_mrk
        result.not_in_mrk = list(self.not_in_mrk)
        return result


def match_and_merge(
    placed: Sequence[Observation],
    footprints: Mapping[str, BaseGeometry],
    sites: gpd.GeoDataFrame,
    crs: CRS,
    tolerance_floor_m: float = 0.0,
    *,
    vote_share: float = 0.0,
    vote_max_uncertainty_m: float = math.inf,
) -> FlightAnalysis:
    """Ground observations (in ``crs``) matched to ``sites`` with a tolerance from their
    uncertainty, merged across frames into findings (outlined by a vote of the frames that
    saw them when ``vote_share`` > 0, see `geo.vote`); coverage of each site by
    ``footprints`` (the ground each analysed frame saw, by frame id).
    The second half of the pipeline, shared by the CLI and the service's flight job."""
    result = FlightAnalysis(crs=crs, detections=len(placed))
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
        result.findings = merge_observations(
            observations, crs, footprints, vote_share, vote_max_uncertainty_m
        )
    result.coverage = site_coverage(sites, list(footprints.values()), result.findings, crs)
    return result


def analyze_frames(
    frames: Iterable[Path],
    sites: gpd.GeoDataFrame,
    detector: Detector,
    *,
    target_gsd_m: float | None = None,
    tolerance_floor_m: float = 0.0,
    quality: QualitySettings | None = None,
    positions: MrkPositions | None = None,
    sites_only: bool = False,
    vote_share: float = 0.0,
    vote_max_uncertainty_m: float = math.inf,
    on_frame: Callable[[Path], object] = lambda path: None,
) -> FlightAnalysis:
    """Detect, georeference, match and merge over ``frames``; see the module docstring.

    A frame whose metadata cannot place it, or whose image cannot be decoded, is listed in
    ``rejected`` with the reason; the others go on.
    """
    analyzer = FlightAnalyzer(
        detector,
        sites,
        target_gsd_m=target_gsd_m,
        tolerance_floor_m=tolerance_floor_m,
        quality=quality,
        positions=positions,
        sites_only=sites_only,
        vote_share=vote_share,
        vote_max_uncertainty_m=vote_max_uncertainty_m,
    )

    # The next frame is read, checked and decoded in a second thread while this one is
    # detected: decoding is single-threaded, so the two cores overlap instead of waiting.
    def place(path: Path, prepared: Future[PreparedFrame | None]) -> None:
        analyzer.place(prepared.result())
        on_frame(path)

    with ThreadPoolExecutor(1, thread_name_prefix="dustpatrol-decode") as decoder:
        waiting: tuple[Path, Future[PreparedFrame | None]] | None = None
        for path in frames:
            ahead = decoder.submit(analyzer.prepare, path)
            if waiting is not None:
                place(*waiting)
            waiting = (path, ahead)
        if waiting is not None:
            place(*waiting)
    return analyzer.finish()
