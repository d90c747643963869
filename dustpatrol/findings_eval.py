"""Findings against the simulated truth: what a bureau would have been told, per site and per
patch, compared with what is really on the ground.

Site level: a site violates when the truth holds exposed soil or road dust above the notice
rules' minimum area; it is reported when a finding of that class above the same minimum (and
the rules' minimum confidence) was matched to it. Patch level: per site and class, the union of
the findings against the union of the true patches: IoU and area error. Position error is
measured where it means where a patch was placed, not how it was outlined: each true patch
(a connected part of the truth) is paired with the found patch that overlaps it best, and when
that pair's IoU is at least `MATCH_IOU` the distance between their centroids is one position
error. The distance between the centroids of the two unions (``centroid_offset_m``) is kept
beside it: it also moves with every missed or spurious patch of the site.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from dustpatrol.settings import Settings
from geo.crs import WGS84, transform_geometry
from sim.kinds import GroundTruthClass
from sim.world import District

PROBLEMS = ("exposed_soil", "road_dust")
MATCH_IOU = 0.5  # a found patch this similar to a true one is the same patch, placed
CLASS_OF = {
    GroundTruthClass.EXPOSED_SOIL: "exposed_soil",
    GroundTruthClass.ROAD_DUST: "road_dust",
    GroundTruthClass.COVERED_SOIL: "covered_soil",
}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _iou(a: BaseGeometry, b: BaseGeometry) -> float:
    union = a.union(b).area
    return a.intersection(b).area / union if union else 0.0


def _parts(geometry: BaseGeometry) -> list[BaseGeometry]:
    return [g for g in getattr(geometry, "geoms", [geometry]) if not g.is_empty]


def patch_offsets(truth: BaseGeometry, seen: BaseGeometry) -> list[float]:
    """Centroid distance (m) of every true patch to the found patch that overlaps it best,
    for the pairs whose IoU is at least `MATCH_IOU` (one position error per placed patch)."""
    found = _parts(seen)
    offsets: list[float] = []
    for part in _parts(truth):
        best, best_iou = None, 0.0
        for candidate in found:
            if not part.intersects(candidate):
                continue
            iou = _iou(part, candidate)
            if iou > best_iou:
                best, best_iou = candidate, iou
        if best is not None and best_iou >= MATCH_IOU:
            offsets.append(round(part.centroid.distance(best.centroid), 3))
    return offsets


def _chosen(district: District, site_ids: Iterable[str] | None) -> set[str]:
    return set(site_ids) if site_ids is not None else {s.site_id for s in district.sites}


def _truth_parts(district: District, chosen: set[str]) -> dict[tuple[str, str], list[BaseGeometry]]:
    """The true patches of the sites ``chosen``, by (site, class)."""
    truth: dict[tuple[str, str], list[BaseGeometry]] = {}
    for patch in district.patches:
        name = CLASS_OF.get(patch.gt_class)
        if name and patch.site_id in chosen:
            truth.setdefault((patch.site_id, name), []).append(patch.geometry)
    return truth


def _problems(
    truth: dict[tuple[str, str], list[BaseGeometry]], settings: Settings
) -> set[tuple[str, str]]:
    minimum = settings.notices.min_area_m2
    return {
        (site, name)
        for (site, name), parts in truth.items()
        if name in PROBLEMS and shapely.union_all(parts).area >= minimum.get(name, 0.0)
    }


def true_problems(
    district: District, settings: Settings, site_ids: Iterable[str] | None = None
) -> set[tuple[str, str]]:
    """(site, class) of each problem the truth of ``district`` holds on the sites ``site_ids``
    (default: all) at or above the notice rules' minimum area of its class."""
    return _problems(_truth_parts(district, _chosen(district, site_ids)), settings)


def evaluate_findings(
    collection: dict[str, Any],
    district: District,
    settings: Settings,
    site_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Site- and patch-level scores of the findings in ``collection`` (GeoJSON in lon/lat, as
    `dustpatrol analyze` writes and the service serves them) over the sites ``site_ids``
    (default: every site of the district)."""
    chosen = _chosen(district, site_ids)
    truth = _truth_parts(district, chosen)
    found: dict[tuple[str, str], list[BaseGeometry]] = {}
    off_site = 0
    reported: set[str] = set()
    for feature in collection.get("features", []):
        properties = feature["properties"]
        site, name = properties.get("site_id"), properties["class"]
        if site is None:
            off_site += name in PROBLEMS
            continue
        if site not in chosen:
            continue
        polygon = transform_geometry(shape(feature["geometry"]), WGS84, district.crs)
        found.setdefault((site, name), []).append(polygon)
        if name in PROBLEMS and settings.notices.acts_on(
            name, properties["area_m2"], properties["confidence"]
        ):
            reported.add(site)
    violating = {site for site, _ in _problems(truth, settings)}
    patches: list[dict[str, Any]] = []
    for key in sorted(set(truth) | set(found)):
        site, name = key
        true_area = shapely.union_all(truth[key]) if key in truth else None
        seen = shapely.union_all(found[key]) if key in found else None
        entry: dict[str, Any] = {
            "site": site,
            "class": name,
            "true_m2": round(true_area.area, 2) if true_area is not None else 0.0,
            "found_m2": round(seen.area, 2) if seen is not None else 0.0,
        }
        if true_area is not None and seen is not None:
            entry["iou"] = round(_iou(true_area, seen), 4)
            entry["area_error"] = round(abs(seen.area - true_area.area) / true_area.area, 4)
            entry["centroid_offset_m"] = round(true_area.centroid.distance(seen.centroid), 3)
            offsets = patch_offsets(true_area, seen)
            entry["patch_offsets_m"] = offsets
            if offsets:
                entry["position_error_m"] = _median(offsets)
        patches.append(entry)
    return _report(
        evaluated=len(chosen),
        violating=sorted(violating),
        reported=sorted(reported),
        off_site=off_site,
        patches=patches,
    )


def _report(
    *,
    evaluated: int,
    violating: Sequence[str],
    reported: Sequence[str],
    off_site: int,
    patches: list[dict[str, Any]],
) -> dict[str, Any]:
    """The report of `evaluate_findings` from its parts (sites named uniquely)."""
    true, said = set(violating), set(reported)
    tp, fp, fn = len(true & said), len(said - true), len(true - said)
    by_class: dict[str, Any] = {}
    for name in (*PROBLEMS, "covered_soil"):
        rows = [p for p in patches if p["class"] == name]
        matched = [p for p in rows if "iou" in p]
        by_class[name] = {
            "site_classes_true": sum(1 for p in rows if p["true_m2"] > 0),
            "site_classes_found": sum(1 for p in rows if p["found_m2"] > 0),
            "median_iou": _median([p["iou"] for p in matched]),
            "median_area_error": _median([p["area_error"] for p in matched]),
            # over placed patches (every site's), not over sites
            "median_position_error_m": _median(
                [offset for p in matched for offset in p.get("patch_offsets_m", [])]
            ),
            "placed_patches": sum(len(p.get("patch_offsets_m", [])) for p in matched),
            "median_centroid_offset_m": _median(
                [p["centroid_offset_m"] for p in matched if "centroid_offset_m" in p]
            ),
        }
    return {
        "sites": {
            "evaluated": evaluated,
            "violating": len(true),
            "reported": len(said),
            "true_positive": tp,
            "false_positive": fp,
            "false_negative": fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "found": sorted(true & said),
            "missed": sorted(true - said),
            "false_alarms": sorted(said - true),
        },
        "classes": by_class,
        "off_site_problem_findings": off_site,
        "patches": patches,
    }


def combine_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One report over several districts' reports (keyed by a district name, which prefixes
    the site ids so that S0001 of two districts stay two sites)."""

    def named(district: str, sites: Iterable[str]) -> list[str]:
        return [f"{district}/{site}" for site in sites]

    return _report(
        evaluated=sum(r["sites"]["evaluated"] for r in reports.values()),
        violating=[
            site
            for name, r in reports.items()
            for site in named(name, r["sites"]["missed"] + r["sites"]["found"])
        ],
        reported=[
            site
            for name, r in reports.items()
            for site in named(name, r["sites"]["found"] + r["sites"]["false_alarms"])
        ],
        off_site=sum(r["off_site_problem_findings"] for r in reports.values()),
        patches=[
            {**patch, "site": f"{name}/{patch['site']}"}
            for name, r in reports.items()
            for patch in r["patches"]
        ],
    )
