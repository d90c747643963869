"""Writing a district to disk and reading it back.

A district folder holds ``world.json`` (the generator parameters, enough to rebuild it, and a
fingerprint to detect a generator that changed since), ``sites.geojson`` (the site registry as
a bureau would hand it over) and the ground truth: ``truth_patches.geojson`` and
``truth_sites.geojson``. GeoJSON is RFC 7946: WGS84 longitude/latitude, areas in m² computed
in the district's UTM zone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import shapely
from shapely import to_wkb
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from sim.errors import SimError
from sim.kinds import GroundTruthClass
from sim.world import WORLD_FORMAT_VERSION, District, DistrictParams, build_district

WORLD_FILE = "world.json"
SITES_FILE = "sites.geojson"
TRUTH_PATCHES_FILE = "truth_patches.geojson"
TRUTH_SITES_FILE = "truth_sites.geojson"
COORDINATE_DECIMALS = 8  # about 1 mm


def fingerprint(district: District) -> str:
    """A hash of the generated sites and patches: equal districts have equal fingerprints."""
    digest = hashlib.sha256()
    for site in district.sites:
        digest.update(site.site_id.encode())
        digest.update(to_wkb(site.geometry, output_dimension=2))
    for patch in district.patches:
        digest.update(patch.patch_id.encode())
        digest.update(to_wkb(patch.geometry, output_dimension=2))
    return digest.hexdigest()


def _round_coordinates(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, COORDINATE_DECIMALS)
    if isinstance(value, list | tuple):
        return [_round_coordinates(v) for v in value]
    return value


def _feature(
    geometry: BaseGeometry, district: District, properties: dict[str, Any]
) -> dict[str, Any]:
    # Snapped to the export grid here, so that the rounded coordinates still form a valid
    # polygon (rounding alone can make near-touching vertices cross).
    lonlat = shapely.set_precision(
        district.geometry_to_lonlat(geometry), 10.0**-COORDINATE_DECIMALS
    )
    shape = mapping(lonlat)
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": {
            "type": shape["type"],
            "coordinates": _round_coordinates(shape["coordinates"]),
        },
    }


def _collection(features: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {"type": "FeatureCollection", "name": name, "features": features}


def write_district(district: District, folder: Path) -> list[Path]:
    """Write the district files into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    world = {
        "format_version": WORLD_FORMAT_VERSION,
        "params": asdict(district.params),
        "utm_epsg": district.crs.to_epsg(),
        "environment": {
            **asdict(district.environment),
            "season": district.environment.season.value,
        },
        "fingerprint": fingerprint(district),
        "site_count": len(district.sites),
        "patch_count": len(district.patches),
    }
    registry = [
        _feature(
            site.geometry,
            district,
            {
                "site_id": site.site_id,
                "name": site.identity.name_zh,
                "name_pinyin": site.identity.name_pinyin,
                "address": site.identity.address_zh,
                "kind": site.kind.value,
                "responsible_bureau": site.identity.bureau_zh,
                "responsible_bureau_en": site.identity.bureau_en,
                "permit_number": site.identity.permit_number,
                "contact_phone": site.identity.contact_phone,
            },
        )
        for site in district.sites
    ]
    patches = [
        _feature(
            patch.geometry,
            district,
            {
                "patch_id": patch.patch_id,
                "site_id": patch.site_id,
                "class": patch.gt_class.label,
                "area_m2": round(patch.area_m2, 3),
            },
        )
        for patch in district.patches
    ]
    site_truth = []
    for site in district.sites:
        areas = {
            cls.label: 0.0 for cls in GroundTruthClass if cls is not GroundTruthClass.BACKGROUND
        }
        for patch in district.patches:
            if patch.site_id == site.site_id:
                areas[patch.gt_class.label] += patch.area_m2
        site_truth.append(
            _feature(
                site.geometry,
                district,
                {
                    "site_id": site.site_id,
                    "kind": site.kind.value,
                    "compliant": site.compliant,
                    "site_area_m2": round(float(site.geometry.area), 3),
                    **{f"{label}_m2": round(area, 3) for label, area in areas.items()},
                },
            )
        )
    outputs = {
        WORLD_FILE: world,
        SITES_FILE: _collection(registry, "sites"),
        TRUTH_PATCHES_FILE: _collection(patches, "truth_patches"),
        TRUTH_SITES_FILE: _collection(site_truth, "truth_sites"),
    }
    written = []
    for file_name, content in outputs.items():
        path = folder / file_name
        path.write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
        written.append(path)
    return written


def load_district(folder: Path) -> District:
    """Rebuild the district written into ``folder`` and check it is the same district."""
    path = folder / WORLD_FILE
    if not path.is_file():
        raise SimError(f"{folder} holds no {WORLD_FILE}; create one with `dustpatrol sim world`")
    try:
        world = json.loads(path.read_text(encoding="utf-8"))
        version = world["format_version"]
        stored = dict(world["params"])
        stored["rectified"] = tuple(stored.get("rectified", ()))
        params = DistrictParams(**stored)
        expected = world["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SimError(f"{path} is not a district file ({exc})") from None
    if version != WORLD_FORMAT_VERSION:
        raise SimError(
            f"{path} has format version {version}, this dustpatrol writes {WORLD_FORMAT_VERSION}; "
            "regenerate it with `dustpatrol sim world`"
        )
    district = build_district(params)
    if fingerprint(district) != expected:
        raise SimError(
            f"{path} was written by a different world generator: the rebuilt district differs; "
            "regenerate it with `dustpatrol sim world`"
        )
    return district
