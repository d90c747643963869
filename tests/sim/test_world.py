"""The simulated district: determinism, site shapes and attributes, ground truth, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from sim.errors import SimError
from sim.export import fingerprint, load_district, write_district
from sim.kinds import GroundTruthClass, SiteKind
from sim.world import CELL_SIZE_M, LAYER_LAND, District, build_district, generate_district


def test_same_seed_gives_the_same_world(district: District) -> None:
    again = generate_district(11, n_sites=14, extent_m=3_000.0)
    assert fingerprint(again) == fingerprint(district)
    assert again.environment == district.environment


def test_different_seeds_give_different_worlds(district: District) -> None:
    other = generate_district(12, n_sites=14, extent_m=3_000.0)
    assert fingerprint(other) != fingerprint(district)


def test_site_count_is_what_was_asked(district: District) -> None:
    assert len(district.sites) == 14
    assert len({site.site_id for site in district.sites}) == 14


@pytest.fixture(scope="module")
def big_district() -> District:
    return generate_district(5, n_sites=120, extent_m=12_000.0)


def test_sites_come_in_every_kind_and_shape(big_district: District) -> None:
    kinds = Counter(site.kind for site in big_district.sites)
    assert set(kinds) == set(SiteKind)
    geometries = [site.geometry for site in big_district.sites]
    assert any(isinstance(g, MultiPolygon) for g in geometries), "no multipart site"
    assert any(isinstance(g, Polygon) and g.interiors for g in geometries), "no site with a hole"
    concave = [g for g in geometries if g.convex_hull.area - g.area > 0.05 * g.area]
    assert concave, "no concave site"
    assert all(g.is_valid and not g.is_empty for g in geometries)


def test_sites_do_not_overlap(big_district: District) -> None:
    tree = shapely.STRtree([site.geometry for site in big_district.sites])
    pairs = tree.query([site.geometry for site in big_district.sites], predicate="intersects")
    assert all(a == b for a, b in zip(*pairs, strict=True))


def test_site_attributes_are_complete_and_chinese(district: District) -> None:
    for site in district.sites:
        identity = site.identity
        assert any("\u4e00" <= ch <= "\u9fff" for ch in identity.name_zh)
        assert identity.name_pinyin.isascii() and identity.name_pinyin.strip()
        assert identity.address_zh.endswith("号")
        assert identity.bureau_zh.endswith("局")
        assert len(identity.permit_number) == 20 and identity.permit_number.isdigit()


def test_some_sites_are_compliant_and_some_are_not(big_district: District) -> None:
    states = Counter(site.compliant for site in big_district.sites)
    assert states[True] > 10 and states[False] > 10


def test_compliance_matches_the_ground_truth(big_district: District) -> None:
    problem_sites = {
        patch.site_id
        for patch in big_district.patches
        if patch.gt_class in (GroundTruthClass.EXPOSED_SOIL, GroundTruthClass.ROAD_DUST)
    }
    for site in big_district.sites:
        assert site.compliant == (site.site_id not in problem_sites)


def test_patches_lie_inside_their_site_and_have_areas(big_district: District) -> None:
    classes = Counter(patch.gt_class for patch in big_district.patches)
    assert set(classes) == {
        GroundTruthClass.EXPOSED_SOIL,
        GroundTruthClass.ROAD_DUST,
        GroundTruthClass.COVERED_SOIL,
    }
    for patch in big_district.patches:
        site = big_district.site(patch.site_id)
        assert patch.area_m2 >= 0.5
        assert patch.geometry.difference(site.geometry.buffer(0.05)).area < 0.01


def test_patches_do_not_overlap_each_other(district: District) -> None:
    by_site: dict[str, list[Polygon | MultiPolygon]] = {}
    for patch in district.patches:
        by_site.setdefault(patch.site_id, []).append(patch.geometry)
    for geometries in by_site.values():
        total = sum(g.area for g in geometries)
        assert shapely.union_all(geometries).area == pytest.approx(total, rel=1e-6)


def test_countryside_stays_outside_sites_and_roads(district: District) -> None:
    site = district.sites[0]
    region = site.geometry.buffer(300.0)
    countryside = [
        s for s in district.surfaces_in(region) if s.site_id is None and s.layer >= LAYER_LAND
    ]
    sites_union = shapely.union_all([s.geometry for s in district.sites])
    generated = [s for s in countryside if s not in district.fixed_surfaces]
    assert generated, "no countryside around the site"
    for surface in generated:
        assert surface.gt_class is GroundTruthClass.BACKGROUND
        assert surface.geometry.intersection(sites_union).area < 0.01


def test_countryside_cells_are_deterministic_and_cached_within_bounds(district: District) -> None:
    min_e, min_n, _, _ = district.bounds
    probe = shapely.box(min_e + 10, min_n + 10, min_e + 20, min_n + 20)
    first = district.surfaces_in(probe)
    rebuilt = build_district(district.params)
    assert [s.geometry.wkb for s in rebuilt.surfaces_in(probe)] == [s.geometry.wkb for s in first]
    cache = district._cells
    assert cache is not None
    for i in range(60):
        district.surfaces_in(
            shapely.box(min_e + i * CELL_SIZE_M, min_n, min_e + i * CELL_SIZE_M + 5, min_n + 5)
        )
    assert len(cache._cells) <= cache.max_cells


def test_a_large_district_needs_no_district_sized_raster() -> None:
    district = generate_district(3, n_sites=10, extent_m=60_000.0)
    e, n = district.origin_utm
    far_corner = shapely.box(e + 29_000, n + 29_000, e + 29_200, n + 29_200)
    assert district.surfaces_in(far_corner)  # any place can be queried, cell by cell


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_sites": 5}, "n_sites must be between 10 and 200"),
        ({"n_sites": 201}, "n_sites must be between 10 and 200"),
        ({"origin_lat": 87.0}, "outside the UTM range"),
        ({"n_sites": 100, "extent_m": 1000.0}, "extent_m must be between"),
    ],
)
def test_bad_district_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SimError, match=message):
        generate_district(1, **kwargs)  # type: ignore[arg-type]


def test_written_district_reads_back_as_the_same_district(
    district: District, tmp_path: Path
) -> None:
    written = write_district(district, tmp_path)
    assert {p.name for p in written} == {
        "world.json",
        "sites.geojson",
        "truth_patches.geojson",
        "truth_sites.geojson",
    }
    assert fingerprint(load_district(tmp_path)) == fingerprint(district)


def test_exported_geojson_is_wgs84_with_areas_in_square_metres(
    district: District, tmp_path: Path
) -> None:
    write_district(district, tmp_path)
    patches = json.loads((tmp_path / "truth_patches.geojson").read_text(encoding="utf-8"))
    assert len(patches["features"]) == len(district.patches)
    for feature, patch in zip(patches["features"], district.patches, strict=True):
        lon, lat = shape(feature["geometry"]).representative_point().coords[0]
        assert 115.0 < lon < 116.0 and 36.0 < lat < 37.0
        assert feature["properties"]["area_m2"] == pytest.approx(patch.area_m2, abs=1e-3)
        assert feature["properties"]["class"] in {"exposed_soil", "road_dust", "covered_soil"}
    registry = json.loads((tmp_path / "sites.geojson").read_text(encoding="utf-8"))
    first = registry["features"][0]["properties"]
    assert set(first) >= {
        "site_id",
        "name",
        "address",
        "kind",
        "responsible_bureau",
        "permit_number",
    }


def test_loading_a_missing_world_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SimError, match="dustpatrol sim world"):
        load_district(tmp_path)


def test_loading_a_corrupt_world_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "world.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SimError, match="not a district file"):
        load_district(tmp_path)


def test_loading_a_world_from_another_generator_is_refused(
    district: District, tmp_path: Path
) -> None:
    write_district(district, tmp_path)
    world = json.loads((tmp_path / "world.json").read_text(encoding="utf-8"))
    world["fingerprint"] = "0" * 64
    (tmp_path / "world.json").write_text(json.dumps(world), encoding="utf-8")
    with pytest.raises(SimError, match="different world generator"):
        load_district(tmp_path)


def test_shadows_fall_away_from_the_sun(district: District) -> None:
    import math

    from sim.render import _shadow

    azimuth = math.radians(district.environment.sun_azimuth_deg)
    towards_sun = np.array([math.sin(azimuth), math.cos(azimuth)])
    raised = [s for s in district.fixed_surfaces if s.height_m >= 3.0 and not s.floating]
    assert raised
    for surface in raised[:30]:
        shadow = _shadow(surface, district.environment.shadow_offset)
        offset = np.asarray(shadow.centroid.coords[0]) - np.asarray(
            surface.geometry.centroid.coords[0]
        )
        assert float(offset @ towards_sun) < 0.0, surface.kind


def test_hoarding_runs_along_the_site_boundary_but_for_the_gate(big_district: District) -> None:
    from sim.kinds import SurfaceKind

    # Plain rectangles: on L-shaped and split plots the gate can fall into the notch or lane.
    walled = [
        s
        for s in big_district.sites
        if s.kind is SiteKind.CONSTRUCTION
        and isinstance(s.geometry, Polygon)
        and not s.geometry.interiors
        and len(s.geometry.exterior.coords) <= 5
    ]
    assert walled
    for site in walled:
        panels = [
            s.geometry
            for s in big_district.fixed_surfaces
            if s.site_id == site.site_id and s.kind is SurfaceKind.HOARDING
        ]
        assert len(panels) == 1, site.site_id
        boundary = site.geometry.boundary
        # Every panel lies on the boundary, and panels follow most of it (the gate is open).
        assert panels[0].difference(boundary.buffer(0.5)).area < 0.01
        covered = boundary.intersection(panels[0].buffer(0.05)).length
        assert 0.8 * boundary.length < covered < boundary.length - 2.0


def test_look_alikes_are_background(big_district: District) -> None:
    from sim.kinds import SurfaceKind

    look_alikes = {
        SurfaceKind.TURF,
        SurfaceKind.RUNNING_TRACK,
        SurfaceKind.TARP_BLUE,
        SurfaceKind.GREENHOUSE,
        SurfaceKind.SOLAR_PANEL,
        SurfaceKind.DIRT_TRACK,
        SurfaceKind.SAND,
        SurfaceKind.STUBBLE,
        SurfaceKind.PLOWED_FIELD,
    }
    min_e, min_n, max_e, max_n = big_district.bounds
    centre_e, centre_n = (min_e + max_e) / 2, (min_n + max_n) / 2
    region = shapely.box(centre_e - 1500, centre_n - 1500, centre_e + 1500, centre_n + 1500)
    found = [s for s in big_district.surfaces_in(region) if s.kind in look_alikes]
    assert len({s.kind for s in found}) >= 5
    assert all(s.gt_class is GroundTruthClass.BACKGROUND for s in found)


def test_road_dust_is_the_dusty_stretch_of_road_not_only_the_wheel_tracks(
    big_district: District,
) -> None:
    """Wheels spread a dust film between and beside their tracks: the truth is the stretch
    an inspector outlines (several metres wide), drawn browner than the clean paving, so the
    label stays what is visible."""
    from sim.kinds import SurfaceKind

    by_site: dict[str, list[Any]] = {}
    for surface in big_district.fixed_surfaces:
        if surface.kind is SurfaceKind.ROAD_DUST:
            assert surface.gt_class is GroundTruthClass.ROAD_DUST
            by_site.setdefault(str(surface.site_id), []).append(surface)
    assert len(by_site) >= 5

    def brown(rgb: tuple[int, int, int]) -> int:
        return rgb[0] - rgb[2]

    films = [surfaces[0] for surfaces in by_site.values()]  # drawn first, the tracks over it
    paving = [
        s
        for s in big_district.fixed_surfaces
        if s.kind is SurfaceKind.CONCRETE and s.site_id in by_site
    ]
    assert np.mean([brown(f.color_rgb) for f in films]) > 8 + np.mean(
        [brown(s.color_rgb) for s in paving]
    )
    truth_area = tracks_area = 0.0
    for site_id, surfaces in by_site.items():
        truth = shapely.union_all(
            [p.geometry for p in big_district.patches if p.site_id == site_id and
             p.gt_class is GroundTruthClass.ROAD_DUST]
        )  # fmt: skip
        # A 0.6 m track alone vanishes when shrunk by 0.9 m; the film between a pair of
        # wheels (gauge 1.9 m) does not.
        assert not truth.buffer(-0.9).is_empty, site_id
        truth_area += truth.area
        tracks_area += surfaces[-1].geometry.area  # the tracks and the spill fan
    # The film between and beside the wheels is labelled too (the tracks alone were the truth).
    assert truth_area > 1.5 * tracks_area


def test_haul_roads_carry_darker_wheel_paths_labelled_exposed_soil(
    big_district: District,
) -> None:
    """Trucks wear paired ruts along a haul road of earth (the pale tracked dirt roads of the
    real photos): drawn darker than the road, inside it, and labelled exposed soil like it,
    so tracked earth is taught as soil and not as the dust film on paving."""
    from sim.kinds import SurfaceKind

    soil = [
        s
        for s in big_district.fixed_surfaces
        if s.kind is SurfaceKind.BARE_SOIL and s.gt_class is GroundTruthClass.EXPOSED_SOIL
    ]
    rutted = 0
    for road in soil:
        inside = [
            s
            for s in soil
            if s is not road
            and s.site_id == road.site_id
            and s.geometry.area < 0.6 * road.geometry.area
            and s.geometry.difference(road.geometry).area < 0.01 * s.geometry.area
        ]
        # paired wheel paths: darker, narrow (gone when shrunk by 0.7 m) and long
        ruts = [
            s
            for s in inside
            if sum(s.color_rgb) < 0.92 * sum(road.color_rgb)
            and s.geometry.buffer(-0.7).is_empty
            and s.geometry.area > 20.0
        ]
        rutted += bool(ruts)
    assert rutted >= 5


def _haul_roads(district: District) -> list[Any]:
    """The haul roads of earth: pale exposed soil, long and a few metres wide."""
    from sim.kinds import SurfaceKind

    return [
        s
        for s in district.fixed_surfaces
        if s.kind is SurfaceKind.BARE_SOIL
        and s.gt_class is GroundTruthClass.EXPOSED_SOIL
        and not s.geometry.buffer(-1.5).is_empty
        and s.geometry.buffer(-5.0).is_empty
        and s.geometry.area > 150.0
    ]


def test_haul_roads_have_churned_darker_verges_labelled_exposed_soil(
    big_district: District,
) -> None:
    """Beside the pale packed roads of the real photos lies darker, unpacked earth the trucks
    and the grader pushed aside, thinning into the weeds within a few metres: ragged strips
    darker than the road, hugging it (within 8 m of it) and reaching beyond it, labelled
    exposed soil."""
    from sim.kinds import SurfaceKind

    soil = [
        s
        for s in big_district.fixed_surfaces
        if s.kind is SurfaceKind.BARE_SOIL and s.gt_class is GroundTruthClass.EXPOSED_SOIL
    ]
    with_verges = 0
    for road in _haul_roads(big_district):
        near = road.geometry.buffer(8.0)
        verges = [
            s
            for s in soil
            if s is not road
            and s.site_id == road.site_id
            and sum(s.color_rgb) < sum(road.color_rgb)
            and s.geometry.intersects(road.geometry)
            and s.geometry.difference(near).area < 0.02 * s.geometry.area
            and s.geometry.difference(road.geometry).area > 10.0
        ]
        with_verges += bool(verges)
    assert with_verges >= 5


def test_earthworks_plots_have_pipes_and_basins_lying_about_outside_the_truth(
    big_district: District,
) -> None:
    """A graded plot is strewn with culvert pipes, catch basins and offcuts, as in the real
    photos: small objects with height, over the site's soil or weeds; the soil they lie on
    is not labelled under them."""
    from sim.kinds import SurfaceKind
    from sim.world import LAYER_OBJECT

    basins = [
        s
        for s in big_district.fixed_surfaces
        if s.kind is SurfaceKind.CONCRETE
        and s.layer == LAYER_OBJECT
        and s.geometry.area < 3.0
        and s.height_m > 0.0
    ]
    assert len(basins) >= 20
    sites = {s.site_id for s in basins}
    assert len(sites) >= 3
    patches = [p for p in big_district.patches if p.site_id in sites]
    covered = sum(
        p.geometry.intersection(b.geometry).area
        for b in basins
        for p in patches
        if p.site_id == b.site_id
    )
    assert covered < 0.01 * sum(b.geometry.area for b in basins)
