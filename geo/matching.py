"""Matching ground detections to sites, merging repeated observations, and site coverage.

Everything here works in one projected CRS (metres) given by the caller; site registries
arrive in EPSG:4326 and are projected once. Matching is columnar (numpy arrays of shapely
geometries through one STRtree) so a million detections take seconds, not hours.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from geo import _kernels as kernels
from geo.crs import WGS84, transform_geometry
from geo.errors import GeoError
from geo.vote import voted_outline

FULL_OVERLAP = 1.0 - 1e-9


class MatchError(GeoError):
    """Inputs to matching or merging are inconsistent."""


class MatchFlag(IntEnum):
    INSIDE = 0  # wholly inside its site
    CLIPPED = 1  # partly outside its site: the geometry was clipped to the site
    NEAR_BOUNDARY = 2  # outside every site but within the tolerance of one: kept, unclipped
    OFF_SITE = 3  # far from every site: for analysts, never a site finding


@dataclass(frozen=True, slots=True)
class SiteMatches:
    """Per detection (same order as the input): the site it belongs to and how.

    ``site_index`` is -1 and ``site_id`` None for off-site detections; ``geometry`` is the
    detection clipped to its site when ``flag`` is CLIPPED, else the detection itself.
    """

    site_index: NDArray[np.int64]
    site_id: NDArray[np.object_]
    flag: NDArray[np.uint8]
    overlap_ratio: NDArray[np.float64]  # share of the detection's area inside the site
    distance_m: NDArray[np.float64]  # 0 when touching the site
    geometry: NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.flag)


def project_sites(sites: gpd.GeoDataFrame, crs: CRS) -> NDArray[np.object_]:
    """Site geometries in ``crs``; the registry must have a CRS."""
    if sites.crs is None:
        raise MatchError("the site registry has no CRS; load it with geo.sites.load_sites")
    if not CRS(crs).is_projected:
        raise MatchError(f"matching needs a projected CRS in metres, got {CRS(crs).name}")
    return np.asarray(sites.to_crs(crs).geometry.values, dtype=object)


@dataclass(frozen=True, slots=True)
class SiteIndex:
    """A registry prepared for matching in one projected CRS: build it once per registry and
    reuse it for every flight (projection, spatial index and edge tables are the costly part)."""

    crs: CRS
    site_ids: NDArray[np.object_]
    geometries: NDArray[np.object_]
    tree: shapely.STRtree  # for the distance queries of the tolerance
    grid: kernels.BoxGrid  # for the candidate pairs
    edges: _SiteEdges

    @classmethod
    def build(cls, sites: gpd.GeoDataFrame, crs: CRS) -> SiteIndex:
        geometries = project_sites(sites, crs)
        shapely.prepare(geometries)
        ids = sites["site_id"].to_numpy(dtype=object) if len(sites) else np.array([], dtype=object)
        return cls(
            CRS(crs),
            ids,
            geometries,
            shapely.STRtree(geometries),
            kernels.BoxGrid(shapely.bounds(geometries).reshape(-1, 4)),
            _SiteEdges.of(geometries),
        )


def match_findings(
    ground_polygons: Sequence[BaseGeometry] | NDArray[np.object_],
    sites: gpd.GeoDataFrame | SiteIndex,
    tolerance_m: float | NDArray[np.float64],
    crs: CRS,
) -> SiteMatches:
    """Assign each ground polygon (in ``crs``) to the site it overlaps most.

    Detections partly outside are clipped and flagged CLIPPED; detections outside every site
    but within ``tolerance_m`` (scalar, or one per detection, e.g. their 95 % uncertainty) of
    one are kept unclipped and flagged NEAR_BOUNDARY; the rest are OFF_SITE. ``sites`` is a
    registry (EPSG:4326 or any CRS) or a `SiteIndex` built for ``crs``.
    """
    detections = np.asarray(ground_polygons, dtype=object)
    n = len(detections)
    tolerance = np.broadcast_to(np.asarray(tolerance_m, dtype=np.float64), (n,))
    if n and (np.any(tolerance < 0) or not np.all(np.isfinite(tolerance))):
        raise MatchError("tolerance_m must be finite and not negative")
    if n and (shapely.is_missing(detections).any() or shapely.is_empty(detections).any()):
        raise MatchError("detections must be non-empty geometries")
    if isinstance(sites, SiteIndex):
        if not sites.crs.equals(CRS(crs)):
            raise MatchError(
                f"the site index is in {sites.crs.name}, the detections in {CRS(crs).name}"
            )
        index = sites
    else:
        index = SiteIndex.build(sites, crs)
    site_geoms, site_ids = index.geometries, index.site_ids
    best_site = np.full(n, -1, dtype=np.int64)
    ratio = np.zeros(n)
    distance = np.full(n, np.inf)
    flag = np.full(n, MatchFlag.OFF_SITE, dtype=np.uint8)
    geometry = detections.copy()
    if n == 0 or len(site_geoms) == 0:
        return SiteMatches(
            best_site, np.full(n, None, dtype=object), flag, ratio, distance, geometry
        )

    tree = index.tree
    det_bounds = shapely.bounds(detections)
    det_idx, site_idx = index.grid.query(det_bounds)
    # Most pairs are decided by compiled edge tests; GEOS handles the rest exactly.
    edges = index.edges
    state = kernels.classify_pairs(
        det_bounds, det_idx, site_idx, edges.edges, edges.offsets, edges.counts
    )
    pair_ratio = np.where(state == _INSIDE, 1.0, 0.0)
    overlap = np.full(len(det_idx), None, dtype=object)
    exact = np.flatnonzero(state == _AMBIGUOUS)
    clips = _ConvexClips.of(detections, det_idx, site_idx, exact, edges)
    pair_ratio[clips.pairs] = clips.ratio
    exact = np.setdiff1d(exact, clips.pairs, assume_unique=True)
    if len(exact):
        clipped_parts = _parallel(
            shapely.intersection, detections[det_idx[exact]], site_geoms[site_idx[exact]]
        )
        overlap[exact] = clipped_parts
        pair_ratio[exact] = shapely.area(clipped_parts) / shapely.area(detections[det_idx[exact]])
    touching = pair_ratio > 0.0
    pair_number = np.flatnonzero(touching)  # positions in the candidate pairs
    det_idx, site_idx, pair_ratio, overlap = (
        det_idx[touching],
        site_idx[touching],
        pair_ratio[touching],
        overlap[touching],
    )
    chosen = _best_pair(det_idx, site_idx, pair_ratio, n)
    partly = pair_ratio[chosen] < FULL_OVERLAP
    clips.fill(overlap, pair_number, chosen[partly])
    matched = det_idx[chosen]
    best_site[matched] = site_idx[chosen]
    ratio[matched] = pair_ratio[chosen]
    distance[matched] = 0.0
    flag[matched] = MatchFlag.INSIDE
    if partly.any():
        flag[matched[partly]] = MatchFlag.CLIPPED
        geometry[matched[partly]] = overlap[chosen[partly]]

    unmatched = np.flatnonzero(best_site < 0)
    if len(unmatched):  # also at tolerance 0: a detection touching a site is 0 m from it
        near_det, near_site = tree.query(
            detections[unmatched], predicate="dwithin", distance=float(tolerance[unmatched].max())
        )
        if len(near_det):
            det_global = unmatched[near_det]
            gaps = shapely.distance(detections[det_global], site_geoms[near_site])
            ok = gaps <= tolerance[det_global]
            det_global, near_site, gaps = det_global[ok], near_site[ok], gaps[ok]
            order = np.lexsort((near_site, gaps, det_global))
            first = np.ones(len(order), dtype=bool)
            first[1:] = det_global[order][1:] != det_global[order][:-1]
            chosen = order[first]
            best_site[det_global[chosen]] = near_site[chosen]
            distance[det_global[chosen]] = gaps[chosen]
            flag[det_global[chosen]] = MatchFlag.NEAR_BOUNDARY
    assigned_ids = np.full(n, None, dtype=object)
    has_site = best_site >= 0
    assigned_ids[has_site] = site_ids[best_site[has_site]]
    return SiteMatches(best_site, assigned_ids, flag, ratio, distance, geometry)


_OUTSIDE, _INSIDE, _AMBIGUOUS = kernels.OUTSIDE, kernels.INSIDE, kernels.AMBIGUOUS


@dataclass(frozen=True, slots=True)
class _ConvexClips:
    """Ambiguous pairs of a convex one-ring detection and a convex one-ring site, clipped in
    compiled code (Sutherland-Hodgman); the clipped polygons are built only where needed."""

    pairs: NDArray[np.int64]  # candidate-pair positions clipped here
    ratio: NDArray[np.float64]  # clipped area / detection area, per entry of pairs
    xy: NDArray[np.float64]
    start: NDArray[np.int64]
    count: NDArray[np.int64]

    @classmethod
    def of(
        cls,
        detections: NDArray[np.object_],
        det_idx: NDArray[np.int64],
        site_idx: NDArray[np.int64],
        ambiguous: NDArray[np.int64],
        edges: _SiteEdges,
    ) -> _ConvexClips:
        candidates = ambiguous[edges.convex_sign[site_idx[ambiguous]] != 0]
        geoms = detections[det_idx[candidates]]
        simple = (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON) & (
            shapely.get_num_interior_rings(geoms) == 0
        )
        candidates, geoms = candidates[simple], geoms[simple]
        # Polygons without holes: their coordinates are the exterior ring's.
        coords, ring = shapely.get_coordinates(geoms, return_index=True)
        per_ring = np.bincount(ring, minlength=len(geoms)).astype(np.int64)
        start = np.zeros(len(geoms), dtype=np.int64)
        if len(geoms):
            start[1:] = np.cumsum(per_ring)[:-1]
        xy, out_start, out_count, area, det_area = kernels.clip_convex(
            np.ascontiguousarray(coords),
            start,
            per_ring - 1,  # a closed ring repeats its first vertex
            site_idx[candidates],
            edges.starts,
            edges.offsets,
            edges.counts,
            edges.convex_sign,
        )
        done = out_count != kernels.NOT_CONVEX
        ratio = np.where(out_count > 0, area / np.where(det_area > 0, det_area, 1.0), 0.0)
        return cls(candidates[done], ratio[done], xy, out_start[done], out_count[done])

    def fill(
        self,
        overlap: NDArray[np.object_],
        pair_number: NDArray[np.int64],
        wanted: NDArray[np.int64],
    ) -> None:
        """Build the clipped polygons of the ``wanted`` (touching-pair positions) that were
        clipped here, into ``overlap``."""
        if not len(self.pairs):
            return
        lookup = np.minimum(np.searchsorted(self.pairs, pair_number[wanted]), len(self.pairs) - 1)
        mine = self.pairs[lookup] == pair_number[wanted]
        targets, entries = wanted[mine], lookup[mine]
        if not len(targets):
            return
        counts = self.count[entries]
        take = np.repeat(self.start[entries], counts) + (
            np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        )
        rings = shapely.linearrings(
            self.xy[take], indices=np.repeat(np.arange(len(targets)), counts)
        )
        overlap[targets] = shapely.polygons(rings)


def _best_pair(
    det_idx: NDArray[np.int64], site_idx: NDArray[np.int64], ratio: NDArray[np.float64], n: int
) -> NDArray[np.int64]:
    """Index of each detection's best pair: largest overlap, then lowest site index.

    Most detections have one candidate; only those with several are sorted.
    """
    per_detection = np.bincount(det_idx, minlength=n)
    single = per_detection[det_idx] == 1
    contested = np.flatnonzero(~single)
    order = contested[np.lexsort((site_idx[contested], -ratio[contested], det_idx[contested]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = det_idx[order][1:] != det_idx[order][:-1]
    return np.concatenate([np.flatnonzero(single), order[first]])


THREADS = 2


def _parallel(function: Any, *arrays: NDArray[Any]) -> NDArray[Any]:
    """Run a vectorised shapely function over halves of the arrays on two threads.

    Shapely releases the GIL inside GEOS, so this uses both cores of a small machine.
    """
    n = len(arrays[0])
    if n < 20_000:
        return np.asarray(function(*arrays))
    bounds = np.linspace(0, n, THREADS + 1).astype(int)
    with ThreadPoolExecutor(THREADS) as pool:
        parts = pool.map(
            lambda ab: function(*(a[ab[0] : ab[1]] for a in arrays)),
            itertools.pairwise(bounds),
        )
        return np.concatenate(list(parts))


@dataclass(frozen=True, slots=True)
class _SiteEdges:
    """Every site's ring edges (x1, y1, x2, y2), stored flat with per-site offsets."""

    edges: NDArray[np.float64]  # (total edges, 4), grouped by site
    offsets: NDArray[np.int64]  # first edge of each site
    counts: NDArray[np.int64]  # edges per site
    # The first vertex of every edge: for a one-ring site, its ring in order.
    starts: NDArray[np.float64]
    # +1/-1 for a site that is one convex ring (counter-/clockwise), 0 otherwise: such sites
    # clip convex detections in compiled code; the others go to GEOS.
    convex_sign: NDArray[np.int8]

    @classmethod
    def of(cls, site_geoms: NDArray[np.object_]) -> _SiteEdges:
        parts, part_site = shapely.get_parts(site_geoms, return_index=True)
        ring_geoms, ring_part = shapely.get_rings(parts, return_index=True)
        coords, coord_ring = shapely.get_coordinates(ring_geoms, return_index=True)
        same_ring = coord_ring[:-1] == coord_ring[1:]
        edges = np.concatenate([coords[:-1], coords[1:]], axis=1)[same_ring]
        # get_parts, get_rings and get_coordinates keep input order: edges come grouped by site.
        edge_site = part_site[ring_part[coord_ring[:-1][same_ring]]]
        counts = np.bincount(edge_site, minlength=len(site_geoms)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rings = np.bincount(part_site[ring_part], minlength=len(site_geoms))
        edges = np.ascontiguousarray(edges)
        starts = np.ascontiguousarray(edges[:, :2])
        sign = kernels.ring_signs(starts, offsets, counts)
        sign[rings != 1] = 0
        return cls(edges, offsets, counts, starts, sign)


@dataclass(frozen=True, slots=True)
class Observation:
    """One detection in one frame, placed on the ground (``polygon`` in the caller's CRS)."""

    frame_id: str
    class_name: str
    polygon: Polygon | MultiPolygon
    confidence: float
    uncertainty_m: float
    pixel_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame
    site_id: str | None = None
    flag: MatchFlag = MatchFlag.INSIDE


@dataclass(frozen=True, slots=True)
class Evidence:
    frame_id: str
    pixel_box: tuple[int, int, int, int]
    confidence: float


@dataclass(frozen=True, slots=True)
class Finding:
    """One patch on the ground, however many frames saw it."""

    site_id: str | None
    class_name: str
    polygon: Polygon | MultiPolygon
    crs: CRS
    area_m2: float
    confidence: float
    uncertainty_m: float
    evidence: tuple[Evidence, ...]
    flags: frozenset[MatchFlag] = field(default_factory=frozenset)


def combine_confidence(per_frame: Sequence[float], looked: int = 0) -> float:
    """A finding's confidence: the mean of the frames' confidences (each frame's best once)
    over the ``looked`` frames that saw its ground (at least those that found it): a frame
    that saw the place and found nothing there counts as 0.

    Overlapping frames are not independent looks: the model sees the same ground alike
    in each, so its mistakes repeat from frame to frame. Combined as independent looks
    (1 - Π(1 - c)), three frames at 0.44-0.68 made 0.95; on held-out districts that made
    most false alarms pass the notice rules (see the README's evaluation). The frames that
    looked and found nothing are what tells a patch on the ground from a mistake that only
    some views of it make (the model's guess at a frame's dark edge, a tile of gravel)."""
    if not per_frame:
        return 0.0
    total = sum(min(max(c, 0.0), 1.0) for c in per_frame)
    return total / max(len(per_frame), looked)


class FootprintIndex:
    """The ground each frame saw, by frame id, indexed once for the many findings of a merge
    (a flight's frames are queried once per finding)."""

    def __init__(self, footprints: Mapping[str, BaseGeometry]) -> None:
        self.names = list(footprints)
        self.shapes = np.asarray([footprints[name] for name in self.names], dtype=object)
        self.tree = shapely.STRtree(self.shapes)

    def saw(self, outline: BaseGeometry, share: float = 0.5) -> set[str]:
        """The frames whose footprint covers at least ``share`` of ``outline``."""
        if outline.is_empty or outline.area <= 0.0 or not self.names:
            return set()
        near = self.tree.query(outline, predicate="intersects")
        if near.size == 0:
            return set()
        covered = shapely.area(shapely.intersection(self.shapes[near], outline))
        return {
            self.names[i]
            for i, area in zip(near, covered, strict=True)
            if area >= share * outline.area
        }


def merge_observations(
    observations: Sequence[Observation],
    crs: CRS,
    footprints: Mapping[str, BaseGeometry] | None = None,
    vote_share: float = 0.0,
    vote_max_uncertainty_m: float = math.inf,
) -> list[Finding]:
    """Merge observations of the same class and site that overlap, or lie within the smaller
    of their uncertainties of each other, into `Finding` s (area in m²).

    A finding's outline is the union of its observations; with ``footprints`` (the ground
    each frame saw, by frame id) and a ``vote_share`` above 0, it is the ground that at least
    that share of the frames which saw it called this class (`geo.vote`), and a patch no
    point of which gets enough votes is no finding. Frames vote only where they agree on
    where things are: a patch whose observations' median uncertainty is above
    ``vote_max_uncertainty_m`` (single-point positions, metres apart from frame to frame)
    keeps the union."""
    if not CRS(crs).is_projected:
        raise MatchError(f"merging needs a projected CRS in metres, got {CRS(crs).name}")
    if not observations:
        return []
    polygons = np.array([o.polygon for o in observations], dtype=object)
    uncertainty = np.array([o.uncertainty_m for o in observations])
    groups = np.array([f"{o.site_id}\x00{o.class_name}" for o in observations], dtype=object)
    parent = np.arange(len(observations))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="dwithin", distance=float(uncertainty.max()))
    keep = (left < right) & (groups[left] == groups[right])
    left, right = left[keep], right[keep]
    gaps = shapely.distance(polygons[left], polygons[right])
    linked = gaps <= np.minimum(uncertainty[left], uncertainty[right])
    for a, b in zip(left[linked], right[linked], strict=True):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(len(observations)):
        members.setdefault(root(i), []).append(i)
    seen = FootprintIndex(footprints) if footprints is not None and vote_share > 0.0 else None
    findings = []
    for indices in members.values():
        group = [observations[i] for i in indices]
        union: BaseGeometry
        best_per_frame: dict[str, float] = {}
        for o in group:
            best_per_frame[o.frame_id] = max(best_per_frame.get(o.frame_id, 0.0), o.confidence)
        looked = 0  # frames that saw the finding, counted where frames vote
        if (
            footprints is not None
            and seen is not None
            and float(np.median([o.uncertainty_m for o in group])) <= vote_max_uncertainty_m
        ):
            union = voted_outline([(o.frame_id, o.polygon) for o in group], footprints, vote_share)
            if union.is_empty:
                continue  # seen by too few of the frames that looked: outvoted
            looked = len(seen.saw(union) | set(best_per_frame))
        else:
            union = shapely.union_all(polygons[indices])
        if not isinstance(union, Polygon | MultiPolygon):
            union = MultiPolygon([g for g in getattr(union, "geoms", []) if isinstance(g, Polygon)])
        evidence = tuple(
            sorted(
                (Evidence(o.frame_id, o.pixel_box, o.confidence) for o in group),
                key=lambda e: (-e.confidence, e.frame_id),
            )
        )
        findings.append(
            Finding(
                site_id=group[0].site_id,
                class_name=group[0].class_name,
                polygon=union,
                crs=CRS(crs),
                area_m2=float(union.area),
                confidence=combine_confidence(list(best_per_frame.values()), looked),
                uncertainty_m=min(o.uncertainty_m for o in group),
                evidence=evidence,
                flags=frozenset(o.flag for o in group),
            )
        )
    findings.sort(key=lambda f: (f.site_id or "~", f.class_name, -f.area_m2))
    return findings


def findings_geojson(findings: Sequence[Finding]) -> dict[str, Any]:
    """RFC 7946 FeatureCollection (EPSG:4326) of findings: the format the API accepts."""
    features = []
    for finding in findings:
        geometry = transform_geometry(finding.polygon, finding.crs, WGS84)
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(shapely.set_precision(geometry, 1e-8)),
                "properties": {
                    "site_id": finding.site_id,
                    "class": finding.class_name,
                    "area_m2": round(finding.area_m2, 3),
                    "confidence": round(finding.confidence, 4),
                    "uncertainty_m": round(finding.uncertainty_m, 3),
                    "flags": sorted(flag.name.lower() for flag in finding.flags),
                    "evidence": [
                        {
                            "frame_id": e.frame_id,
                            "pixel_box": list(e.pixel_box),
                            "confidence": round(e.confidence, 4),
                        }
                        for e in finding.evidence
                    ],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


@dataclass(frozen=True, slots=True)
class SiteCoverage:
    site_id: str
    site_area_m2: float
    seen_m2: float
    exposed_soil_m2: float
    covered_soil_m2: float

    @property
    def coverage_ratio(self) -> float:
        """Share of the site seen by at least one frame."""
        return self.seen_m2 / self.site_area_m2 if self.site_area_m2 > 0 else 0.0

    @property
    def exposed_share(self) -> float:
        """Exposed soil as a share of all soil found (exposed + covered); NaN if none."""
        soil = self.exposed_soil_m2 + self.covered_soil_m2
        return self.exposed_soil_m2 / soil if soil > 0 else math.nan


def site_coverage(
    sites: gpd.GeoDataFrame,
    footprints: Sequence[BaseGeometry],
    findings: Sequence[Finding],
    crs: CRS,
) -> list[SiteCoverage]:
    """For each site: area seen by the frames' footprints and soil found (m², in ``crs``)."""
    site_geoms = project_sites(sites, crs)
    seen = shapely.union_all(np.asarray(footprints, dtype=object)) if footprints else Polygon()
    result = []
    for site_id, geom in zip(sites["site_id"], site_geoms, strict=True):
        soil: dict[str, list[BaseGeometry]] = {"exposed_soil": [], "covered_soil": []}
        for finding in findings:
            if finding.site_id == site_id and finding.class_name in soil:
                soil[finding.class_name].append(finding.polygon)
        areas = {
            name: float(shapely.union_all(parts).intersection(geom).area) if parts else 0.0
            for name, parts in soil.items()
        }
        result.append(
            SiteCoverage(
                site_id=str(site_id),
                site_area_m2=float(geom.area),
                seen_m2=float(geom.intersection(seen).area),
                exposed_soil_m2=areas["exposed_soil"],
                covered_soil_m2=areas["covered_soil"],
            )
        )
    return result
