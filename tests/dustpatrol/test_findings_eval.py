"""Findings against the truth: position error is where a patch was placed, not how the site's
whole truth and whole findings differ."""

from __future__ import annotations

from typing import Any

import pytest
import shapely
from shapely.affinity import translate
from shapely.geometry import box, mapping

from dustpatrol.findings_eval import evaluate_findings, patch_offsets
from dustpatrol.settings import Settings
from geo.crs import WGS84, transform_geometry
from sim.kinds import GroundTruthClass
from sim.world import District, generate_district


def _feature(district: District, site: str, name: str, polygon: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": mapping(transform_geometry(polygon, district.crs, WGS84)),
        "properties": {
            "site_id": site,
            "class": name,
            "area_m2": polygon.area,
            "confidence": 0.9,
        },
    }


def test_position_error_is_measured_on_placed_patches_not_on_the_site_union() -> None:
    district = generate_district(9001, n_sites=10, extent_m=2_000.0)
    soil = [p for p in district.patches if p.gt_class is GroundTruthClass.EXPOSED_SOIL]
    site = max({p.site_id for p in soil}, key=lambda s: sum(p.site_id == s for p in soil))
    truth = shapely.union_all([p.geometry for p in soil if p.site_id == site])
    parts = list(getattr(truth, "geoms", [truth]))
    # every true patch found 0.3 m east and 0.4 m north of where it is (0.5 m off) ...
    features = [
        _feature(district, site, "exposed_soil", translate(part, 0.3, 0.4)) for part in parts
    ]
    # ... and one spurious patch at the far corner of the site's box
    *_, max_x, max_y = truth.bounds
    spurious = box(max_x + 30.0, max_y + 30.0, max_x + 40.0, max_y + 40.0)
    features.append(_feature(district, site, "exposed_soil", spurious))
    report = evaluate_findings({"features": features}, district, Settings(), [site])
    figures = report["classes"]["exposed_soil"]
    assert figures["placed_patches"] == len(parts)
    assert figures["median_position_error_m"] == pytest.approx(0.5, abs=0.02)
    # the union's centroid is dragged towards the spurious patch: metres, not half a metre
    assert figures["median_centroid_offset_m"] > 1.0


def test_a_patch_outlined_too_differently_is_not_placed() -> None:
    truth = box(0, 0, 10, 10)
    assert patch_offsets(truth, box(1, 0, 11, 10)) == [pytest.approx(1.0)]
    # IoU 0.25: the same place, outlined too badly for its centroid to say where it was put
    assert patch_offsets(truth, box(0, 0, 5, 5)) == []
    # two true patches, one found: one placement
    two = shapely.union_all([truth, box(50, 0, 60, 10)])
    assert patch_offsets(two, translate(truth, 0.0, 0.5)) == [pytest.approx(0.5)]
