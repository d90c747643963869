"""geo.matching: detections to sites, merging repeated observations, coverage."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import CRS
from shapely.geometry import Point, Polygon, box

from geo.matching import (
    MatchError,
    MatchFlag,
    Observation,
    SiteIndex,
    combine_confidence,
    findings_geojson,
    match_findings,
    merge_observations,
    site_coverage,
)
from sim.world import District

UTM = CRS.from_epsg(32650)
E0, N0 = 500_000.0, 4_000_000.0


def two_square_sites() -> gpd.GeoDataFrame:
    """Site A: 100 m square at the origin; site B: the next 100 m square east, 50 m apart."""
    squares = gpd.GeoSeries(
        [box(E0, N0, E0 + 100, N0 + 100), box(E0 + 150, N0, E0 + 250, N0 + 100)], crs=UTM
    )
    return gpd.GeoDataFrame({"site_id": ["A", "B"]}, geometry=squares.to_crs(4326), crs=4326)


def square_at(e: float, n: float, size: float = 4.0) -> Polygon:
    return box(E0 + e, N0 + n, E0 + e + size, N0 + n + size)


def test_detections_inside_clipped_near_and_off_site() -> None:
    detections = [
        square_at(10, 10),  # inside A
        square_at(98, 50),  # straddles A's east edge: half inside
        square_at(102, 50, 2.0),  # 2 m east of A: within tolerance 3 m
        square_at(120, 50),  # 20 m from A, 26 m from B: off-site
        square_at(160, 90),  # inside B
    ]
    result = match_findings(detections, two_square_sites(), 3.0, UTM)
    assert list(result.site_id) == ["A", "A", "A", None, "B"]
    assert list(result.flag) == [
        MatchFlag.INSIDE,
        MatchFlag.CLIPPED,
        MatchFlag.NEAR_BOUNDARY,
        MatchFlag.OFF_SITE,
        MatchFlag.INSIDE,
    ]
    assert result.overlap_ratio[1] == pytest.approx(0.5)
    assert result.geometry[1].area == pytest.approx(8.0)  # clipped to the site
    assert result.geometry[2].area == pytest.approx(4.0)  # near the boundary: kept whole
    assert result.distance_m[2] == pytest.approx(2.0)
    assert math.isinf(result.distance_m[3])


def test_a_detection_over_two_sites_goes_to_the_larger_overlap() -> None:
    sites = two_square_sites()
    straddle = box(E0 + 90, N0 + 10, E0 + 170, N0 + 20)  # 10 m in A, 20 m in B
    result = match_findings([straddle], sites, 0.0, UTM)
    assert result.site_id[0] == "B"
    assert result.overlap_ratio[0] == pytest.approx(20 / 80)


def test_per_detection_tolerance() -> None:
    detections = [square_at(105, 10, 1.0), square_at(105, 30, 1.0)]
    result = match_findings(detections, two_square_sites(), np.array([6.0, 2.0]), UTM)
    assert list(result.flag) == [MatchFlag.NEAR_BOUNDARY, MatchFlag.OFF_SITE]


def test_empty_inputs() -> None:
    assert len(match_findings([], two_square_sites(), 1.0, UTM)) == 0
    no_sites = two_square_sites().iloc[:0]
    result = match_findings([square_at(1, 1)], no_sites, 1.0, UTM)
    assert list(result.flag) == [MatchFlag.OFF_SITE]
    assert merge_observations([], UTM) == []


def test_geographic_crs_is_refused() -> None:
    with pytest.raises(MatchError, match="projected CRS"):
        match_findings([square_at(1, 1)], two_square_sites(), 1.0, CRS.from_epsg(4326))
    with pytest.raises(MatchError, match="projected CRS"):
        merge_observations([observation("f1", square_at(1, 1))], CRS.from_epsg(4326))


def test_sites_without_crs_and_bad_tolerance_are_refused() -> None:
    sites = two_square_sites().set_crs(None, allow_override=True)
    with pytest.raises(MatchError, match="no CRS"):
        match_findings([square_at(1, 1)], sites, 1.0, UTM)
    with pytest.raises(MatchError, match="tolerance"):
        match_findings([square_at(1, 1)], two_square_sites(), -1.0, UTM)
    with pytest.raises(MatchError, match="non-empty"):
        match_findings([Polygon()], two_square_sites(), 1.0, UTM)


def test_ground_truth_patches_match_their_own_sites(district: District) -> None:
    sites = gpd.GeoDataFrame(
        {"site_id": [s.site_id for s in district.sites]},
        geometry=gpd.GeoSeries([s.geometry for s in district.sites], crs=district.crs).to_crs(4326),
    )
    patches = [p.geometry for p in district.patches]
    result = match_findings(patches, sites, 1.0, district.crs)
    assert list(result.site_id) == [p.site_id for p in district.patches]
    assert (result.overlap_ratio > 0.99).all()


def observation(
    frame: str,
    polygon: Polygon,
    cls: str = "exposed_soil",
    conf: float = 0.6,
    site: str | None = "A",
    uncertainty: float = 1.5,
) -> Observation:
    return Observation(frame, cls, polygon, conf, uncertainty, (10, 20, 110, 220), site)


def test_overlapping_observations_of_one_patch_become_one_finding() -> None:
    observations = [
        observation("f1", square_at(10, 10, 10.0), conf=0.6),
        observation("f2", square_at(11, 10.5, 10.0), conf=0.7),
        observation("f3", square_at(21.5, 10, 3.0), conf=0.5),  # 0.5 m gap, within uncertainty
        observation("f3", square_at(60, 60, 5.0), conf=0.9),  # another patch
        observation("f1", square_at(10, 10, 10.0), cls="covered_soil"),  # another class
    ]
    findings = merge_observations(observations, UTM)
    assert len(findings) == 3
    big = next(f for f in findings if len(f.evidence) == 3)
    assert big.class_name == "exposed_soil" and big.site_id == "A"
    expected_union = shapely.union_all([o.polygon for o in observations[:3]]).area
    assert big.area_m2 == pytest.approx(expected_union)
    assert big.confidence == pytest.approx((0.6 + 0.7 + 0.5) / 3)
    assert [e.frame_id for e in big.evidence] == ["f2", "f1", "f3"]


def test_same_patch_in_different_sites_is_not_merged() -> None:
    observations = [
        observation("f1", square_at(10, 10, 10.0), site="A"),
        observation("f2", square_at(10, 10, 10.0), site="B"),
    ]
    assert len(merge_observations(observations, UTM)) == 2


def test_confidence_combination_counts_each_frame_once() -> None:
    # Frames that see the same ground are not independent looks: two unsure frames make an
    # unsure finding (as independent looks 0.44 and 0.68 made 0.82), one sure frame among
    # unsure ones does not make it sure.
    assert combine_confidence([0.5, 0.5]) == pytest.approx(0.5)
    assert combine_confidence([0.44, 0.68]) == pytest.approx(0.56)
    assert combine_confidence([0.9, 0.3, 0.3]) == pytest.approx(0.5)
    assert combine_confidence([]) == 0.0
    twice_same_frame = [
        observation("f1", square_at(0, 0), conf=0.5),
        observation("f1", square_at(1, 0), conf=0.5),
    ]
    assert merge_observations(twice_same_frame, UTM)[0].confidence == pytest.approx(0.5)


def test_findings_geojson_is_wgs84_with_evidence() -> None:
    findings = merge_observations([observation("f1", square_at(10, 10, 10.0))], UTM)
    collection = json.loads(json.dumps(findings_geojson(findings)))
    feature = collection["features"][0]
    lon, lat = feature["geometry"]["coordinates"][0][0]
    assert 116 < lon < 118 and 36 < lat < 37
    assert feature["properties"]["area_m2"] == pytest.approx(100.0)
    assert feature["properties"]["evidence"][0] == {
        "frame_id": "f1",
        "pixel_box": [10, 20, 110, 220],
        "confidence": 0.6,
    }


def test_site_coverage_and_soil_shares() -> None:
    sites = two_square_sites()
    footprint = box(E0 - 10, N0 - 10, E0 + 50, N0 + 110)  # the west half of A
    findings = merge_observations(
        [
            observation("f1", square_at(10, 10, 10.0), cls="exposed_soil"),
            observation("f1", square_at(30, 30, 20.0), cls="covered_soil"),
        ],
        UTM,
    )
    coverage = {c.site_id: c for c in site_coverage(sites, [footprint], findings, UTM)}
    assert coverage["A"].coverage_ratio == pytest.approx(0.5, rel=1e-6)
    assert coverage["B"].coverage_ratio == 0.0
    assert coverage["A"].exposed_soil_m2 == pytest.approx(100.0)
    assert coverage["A"].exposed_share == pytest.approx(100 / 500)
    assert math.isnan(coverage["B"].exposed_share)


def test_fast_path_agrees_with_exact_geometry_on_awkward_sites(district: District) -> None:
    """Concave, holed, multipart and rotated sites; detections thrown across their edges."""
    site_geoms = [s.geometry for s in district.sites]
    sites = gpd.GeoDataFrame(
        {"site_id": [s.site_id for s in district.sites]},
        geometry=gpd.GeoSeries(site_geoms, crs=district.crs).to_crs(4326),
    )
    projected = sites.to_crs(district.crs).geometry.to_numpy()
    rng = np.random.default_rng(8)
    boundary_points: list[Point] = []
    for geometry in projected:
        for ring in shapely.get_rings(shapely.get_parts(geometry)):
            distances = rng.uniform(0, ring.length, 60)
            boundary_points.extend(shapely.line_interpolate_point(ring, distances))
    centres = np.array([(p.x, p.y) for p in boundary_points]) + rng.normal(
        0, 4.0, (len(boundary_points), 2)
    )
    sizes = rng.uniform(1.0, 9.0, len(centres))
    angles = rng.uniform(0, 90, len(centres))
    detections = [
        shapely.affinity.rotate(box(x - s / 2, y - s / 3, x + s / 2, y + s / 3), a)
        for (x, y), s, a in zip(centres, sizes, angles, strict=True)
    ]
    result = match_findings(detections, sites, 0.0, district.crs)
    for i, detection in enumerate(detections):
        overlaps = np.array([detection.intersection(g).area / detection.area for g in projected])
        best = int(np.argmax(overlaps))
        if overlaps[best] <= 1e-12:
            assert result.site_id[i] is None, i
            continue
        assert result.overlap_ratio[i] == pytest.approx(overlaps[best], abs=1e-9), i
        assert result.site_id[i] == sites["site_id"].iloc[best], i


def test_a_prepared_site_index_matches_like_the_registry() -> None:
    sites = two_square_sites()
    detections = [square_at(10, 10), square_at(98, 50), square_at(160, 90), square_at(120, 50)]
    index = SiteIndex.build(sites, UTM)
    with_index = match_findings(detections, index, 3.0, UTM)
    direct = match_findings(detections, sites, 3.0, UTM)
    assert list(with_index.site_id) == list(direct.site_id)
    assert list(with_index.flag) == list(direct.flag)
    with pytest.raises(MatchError, match="site index is in"):
        match_findings(detections, index, 3.0, CRS.from_epsg(32651))


@settings(max_examples=60, deadline=None)
@given(
    site_points=st.lists(
        st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=3, max_size=12, unique=True
    ),
    det_points=st.lists(
        st.tuples(st.floats(-20, 120), st.floats(-20, 120)), min_size=3, max_size=9, unique=True
    ),
    clockwise=st.booleans(),
)
def test_compiled_convex_clipping_agrees_with_geos(
    site_points: list[tuple[float, float]],
    det_points: list[tuple[float, float]],
    clockwise: bool,
) -> None:
    """Convex sites (either orientation) and convex or concave detections, in UTM-sized
    coordinates: the compiled clip gives GEOS's overlap and clipped polygon."""
    site = shapely.MultiPoint([(E0 + x, N0 + y) for x, y in site_points]).convex_hull
    detection = shapely.MultiPoint([(E0 + x, N0 + y) for x, y in det_points]).convex_hull
    assume(site.geom_type == "Polygon" and site.area > 1.0)
    assume(detection.geom_type == "Polygon" and detection.area > 0.5)
    site = shapely.orient_polygons(site, exterior_cw=clockwise)
    sites = gpd.GeoDataFrame({"site_id": ["A"]}, geometry=[site], crs=UTM)
    result = match_findings([detection], sites, 0.0, UTM)
    expected = detection.intersection(site).area / detection.area
    if expected <= 1e-9:
        # no area inside: off the site, unless it touches it, which is within a tolerance of 0
        # (distance 0, NEAR_BOUNDARY, as the tolerance rule says)
        if detection.distance(site) == 0.0:
            assert result.flag[0] == MatchFlag.NEAR_BOUNDARY and result.distance_m[0] == 0.0
        else:
            assert result.site_id[0] is None
        return
    assert result.overlap_ratio[0] == pytest.approx(expected, abs=1e-7)
    if result.flag[0] == MatchFlag.CLIPPED:
        clipped = result.geometry[0]
        assert clipped.is_valid
        assert clipped.area == pytest.approx(detection.intersection(site).area, abs=1e-6)
        assert clipped.symmetric_difference(detection.intersection(site)).area < 1e-6


def test_concave_detections_and_shared_edges_take_the_exact_path() -> None:
    sites = two_square_sites()
    l_shape = Polygon(
        [
            (E0 + 90, N0 + 10),
            (E0 + 120, N0 + 10),
            (E0 + 120, N0 + 20),
            (E0 + 100, N0 + 20),
            (E0 + 100, N0 + 40),
            (E0 + 90, N0 + 40),
        ]
    )  # concave, across A's east edge
    along_edge = box(E0 + 90, N0 + 50, E0 + 100, N0 + 60)  # shares A's east edge
    result = match_findings([l_shape, along_edge], sites, 0.0, UTM)
    assert result.flag[0] == MatchFlag.CLIPPED
    site_a = sites.to_crs(UTM).geometry.iloc[0]
    assert result.geometry[0].area == pytest.approx(l_shape.intersection(site_a).area)
    assert result.flag[1] == MatchFlag.INSIDE and result.overlap_ratio[1] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(0, 300), st.floats(0, 50)),
        min_size=1,
        max_size=60,
    ),
    queries=st.lists(
        st.tuples(st.floats(-2e3, 2e3), st.floats(-2e3, 2e3), st.floats(0, 500), st.floats(0, 20)),
        min_size=0,
        max_size=60,
    ),
)
def test_the_box_grid_finds_exactly_the_pairs_an_strtree_finds(
    items: list[tuple[float, float, float, float]],
    queries: list[tuple[float, float, float, float]],
) -> None:
    from geo._kernels import BoxGrid

    def boxes(rows: list[tuple[float, float, float, float]]) -> np.ndarray:
        return np.array([(x, y, x + w, y + h) for x, y, w, h in rows]).reshape(-1, 4)

    item_boxes, query_boxes = boxes(items), boxes(queries)
    q, i = BoxGrid(item_boxes).query(query_boxes)
    tree = shapely.STRtree(shapely.box(*item_boxes.T))
    expected = tree.query(shapely.box(*query_boxes.T)) if len(queries) else np.empty((2, 0))
    assert sorted(zip(q.tolist(), i.tolist(), strict=True)) == sorted(
        zip(expected[0].tolist(), expected[1].tolist(), strict=True)
    )
