"""geo.sites: every registry format, CRS handling, GCJ-02, repairs, rejections, overlaps."""

from __future__ import annotations

import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from shapely.geometry import LineString, Point, Polygon, box
from typer.testing import CliRunner

from dustpatrol.cli import app
from geo.crs import CrsError, gcj02_to_wgs84, wgs84_to_gcj02
from geo.sites import SiteRegistryError, load_sites
from sim.export import write_district
from sim.world import District

# Writing a GBK shapefile truncates long Chinese field names, as real ones are; GDAL says so.
pytestmark = pytest.mark.filterwarnings("ignore:Could not decode error message")

LON, LAT = 115.45, 36.48
D = 0.001  # about 90 m east-west, 110 m north-south


def square(i: int, size: float = D) -> Polygon:
    return box(LON + 2 * i * D, LAT, LON + 2 * i * D + size, LAT + size)


def same_shape(a: object, b: object, tolerance: float) -> bool:
    """Equal up to ``tolerance`` degrees, whatever the ring orientation and start vertex."""
    return bool(a.normalize().equals_exact(b.normalize(), tolerance=tolerance))  # type: ignore[attr-defined]


def sample_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "编号": ["GD-001", "GD-002", "GD-003"],
            "项目名称": ["东关锦绣小区建设项目", "西关拆迁工程", "城关煤炭经营部"],
            "类型": ["建筑工地", "拆迁", "煤场"],
            "责任单位": ["县住房和城乡建设局", "县住房和城乡建设局", "县发展和改革局"],
            "施工许可证号": ["371521202601010101", "371521202602020101", ""],
        },
        geometry=[square(0), square(1), square(2)],
        crs=4326,
    )


def write_format(frame: gpd.GeoDataFrame, folder: Path, kind: str) -> Path:
    if kind == "geojson":
        path = folder / "sites.geojson"
        pyogrio.write_dataframe(frame, path, driver="GeoJSON")
    elif kind == "kml":
        path = folder / "sites.kml"
        pyogrio.write_dataframe(frame, path, driver="KML")
    elif kind == "kmz":
        kml = write_format(frame, folder, "kml")
        path = folder / "sites.kmz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.write(kml, "doc.kml")
    elif kind == "shp":
        path = folder / "sites.shp"
        pyogrio.write_dataframe(frame, path, encoding="GBK")
    elif kind == "zip":
        (folder / "shp").mkdir()
        shp = write_format(frame, folder / "shp", "shp")
        path = folder / "sites.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in shp.parent.iterdir():
                archive.write(part, part.name)
    elif kind == "gpkg":
        path = folder / "sites.gpkg"
        pyogrio.write_dataframe(frame, path, driver="GPKG")
    elif kind in ("csv", "csv-gbk"):
        path = folder / "sites.csv"
        table = frame.drop(columns="geometry").assign(WKT=frame.geometry.to_wkt())
        table.to_csv(path, index=False, encoding="utf-8" if kind == "csv" else "gbk")
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind", ["geojson", "kml", "kmz", "shp", "zip", "gpkg", "csv", "csv-gbk"])
def test_every_format_loads_the_same_sites(tmp_path: Path, kind: str) -> None:
    path = write_format(sample_frame(), tmp_path, kind)
    registry = load_sites(path, crs="EPSG:4326" if kind.startswith("csv") else None)
    sites = registry.sites
    assert registry.report.ok, registry.report
    assert list(sites["site_id"]) == ["GD-001", "GD-002", "GD-003"]
    assert list(sites["name"]) == ["东关锦绣小区建设项目", "西关拆迁工程", "城关煤炭经营部"]
    assert list(sites["kind"]) == ["construction", "demolition", "coal_yard"]
    assert sites.loc[0, "responsible_bureau"] == "县住房和城乡建设局"
    assert sites.loc[0, "permit_number"] == "371521202601010101"
    assert sites.crs.to_epsg() == 4326
    assert same_shape(sites.geometry.iloc[0], square(0), 1e-9)


def test_sim_registry_loads_with_areas_in_square_metres(district: District, tmp_path: Path) -> None:
    write_district(district, tmp_path)
    registry = load_sites(tmp_path / "sites.geojson")
    assert registry.report.ok and not registry.report.repaired
    assert len(registry.sites) == len(district.sites)
    areas = registry.sites.to_crs(district.crs).area.to_numpy()
    expected = np.array([site.geometry.area for site in district.sites])
    assert np.allclose(areas, expected, rtol=1e-4)  # GeoJSON keeps 1e-8 degrees (~1 mm)


def test_gbk_shapefile_without_cpg_needs_the_encoding(tmp_path: Path) -> None:
    path = write_format(sample_frame(), tmp_path, "shp")
    (tmp_path / "sites.cpg").unlink()
    registry = load_sites(path, encoding="gbk")
    assert registry.sites.loc[1, "name"] == "西关拆迁工程"


def test_missing_crs_is_an_error_that_says_what_to_pass(tmp_path: Path) -> None:
    path = write_format(sample_frame(), tmp_path, "csv")
    with pytest.raises(CrsError, match="--crs EPSG:4326"):
        load_sites(path)


def test_projected_input_is_converted_to_wgs84(tmp_path: Path) -> None:
    frame = sample_frame().to_crs(4547)  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
    path = tmp_path / "projected.gpkg"
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    sites = load_sites(path).sites
    assert same_shape(sites.geometry.iloc[2], square(2), 1e-7)


def test_gcj02_forward_matches_published_values() -> None:
    lon, lat = wgs84_to_gcj02(np.array([116.404, 116.0]), np.array([39.915, 40.0]))
    assert lon[0] == pytest.approx(116.41024449916938, abs=1e-9)
    assert lat[0] == pytest.approx(39.91640428150164, abs=1e-9)
    # A second published implementation agrees to ~3 mm (it rounds a constant differently).
    assert lon[1] == pytest.approx(116.006141221789, abs=1e-7)
    assert lat[1] == pytest.approx(40.001213650174, abs=1e-7)


def test_gcj02_inverse_recovers_wgs84_and_leaves_other_countries_alone() -> None:
    lon = np.array([115.45, 121.47, 2.35])
    lat = np.array([36.48, 31.23, 48.86])  # Shandong, Shanghai, Paris
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert np.abs(back_lon - lon).max() < 1e-9 and np.abs(back_lat - lat).max() < 1e-9
    assert wgs84_to_gcj02(lon[2:], lat[2:])[0][0] == 2.35


def test_gcj02_registry_is_converted_on_request(tmp_path: Path) -> None:
    frame = sample_frame()
    shifted = frame.geometry.apply(
        lambda g: Polygon(np.column_stack(wgs84_to_gcj02(*np.asarray(g.exterior.coords).T)))
    )
    path = tmp_path / "gcj.geojson"
    pyogrio.write_dataframe(frame.set_geometry(shifted), path, driver="GeoJSON")
    registry = load_sites(path, crs="gcj02")
    assert "GCJ-02" in registry.report.crs_note
    for loaded, original in zip(registry.sites.geometry, frame.geometry, strict=True):
        assert same_shape(loaded, original, 1e-8)
    # Without the option the same file is ~500 m off: the user must say so.
    unconverted = load_sites(path).sites.geometry.iloc[0]
    assert unconverted.centroid.distance(frame.geometry.iloc[0].centroid) > 0.002


def test_invalid_polygon_is_repaired_and_listed(tmp_path: Path) -> None:
    bow_tie = Polygon([(LON, LAT), (LON + D, LAT + D), (LON + D, LAT), (LON, LAT + D)])
    frame = gpd.GeoDataFrame({"site_id": ["B1"]}, geometry=[bow_tie], crs=4326)
    path = tmp_path / "bad.geojson"
    pyogrio.write_dataframe(frame, path, driver="GeoJSON")
    registry = load_sites(path)
    assert registry.report.ok
    assert [issue.feature for issue in registry.report.repaired] == ["B1"]
    assert "Self-intersection" in registry.report.repaired[0].problem
    assert registry.sites.geometry.iloc[0].is_valid
    assert registry.sites.geometry.iloc[0].area == pytest.approx(D * D / 2)


def test_unusable_features_are_rejected_by_id_and_the_rest_kept(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"site_id": ["OK1", "PT", "LN", "OK1", "OK2"]},
        geometry=[
            square(0),
            Point(LON, LAT),
            LineString([(LON, LAT), (LON + D, LAT)]),
            square(3),
            square(4),
        ],
        crs=4326,
    )
    path = tmp_path / "mixed.gpkg"
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    registry = load_sites(path)
    assert list(registry.sites["site_id"]) == ["OK1", "OK2"]
    problems = {(i.feature, i.problem.split(";")[0]) for i in registry.report.rejected}
    assert ("PT", "is a Point") in problems
    assert ("LN", "is a LineString") in problems
    assert any(f == "OK1" and p.startswith("duplicate site id") for f, p in problems)
    assert not registry.report.ok


def test_empty_geometry_and_bad_wkt_are_rejected_with_the_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        f'编号,名称,WKT\nC1,好的,"{square(0).wkt}"\nC2,空的,\nC3,坏的,POLYGON((1 2, 3\n',
        encoding="utf-8",
    )
    registry = load_sites(path, crs="EPSG:4326")
    assert list(registry.sites["site_id"]) == ["C1"]
    rejected = {issue.feature: issue.problem for issue in registry.report.rejected}
    assert rejected["C2"] == "empty geometry"
    # the unquoted commas of C3's WKT split it into more values than the header has columns
    assert "more value(s) than the header" in rejected["C3"]


def test_overlapping_sites_are_reported_with_the_shared_area(tmp_path: Path) -> None:
    a = square(0)
    b = box(LON + D / 2, LAT, LON + 1.5 * D, LAT + D)
    frame = gpd.GeoDataFrame({"site_id": ["A", "B"]}, geometry=[a, b], crs=4326)
    path = tmp_path / "overlap.geojson"
    pyogrio.write_dataframe(frame, path, driver="GeoJSON")
    report = load_sites(path).report
    assert report.ok
    assert [(o.site_a, o.site_b) for o in report.overlaps] == [("A", "B")]
    full_area = gpd.GeoSeries([a], crs=4326).to_crs(32650).area.iloc[0]
    assert report.overlaps[0].area_m2 == pytest.approx(full_area / 2, rel=0.01)


def test_file_without_features_is_not_ok(tmp_path: Path) -> None:
    path = tmp_path / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    registry = load_sites(path, crs="EPSG:4326")
    assert registry.report.loaded == 0 and not registry.report.ok


def test_unsupported_and_missing_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "sites.xlsx").write_bytes(b"PK")
    with pytest.raises(SiteRegistryError, match="unsupported file type"):
        load_sites(tmp_path / "sites.xlsx")
    with pytest.raises(SiteRegistryError, match="does not exist"):
        load_sites(tmp_path / "nope.geojson")
    (tmp_path / "broken.geojson").write_text("{ not json", encoding="utf-8")
    with pytest.raises(SiteRegistryError, match="cannot be read"):
        load_sites(tmp_path / "broken.geojson")


def test_sites_check_command_reports_and_sets_the_exit_code(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write_format(sample_frame(), tmp_path, "geojson")
    result = runner.invoke(app, ["sites", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "3 site(s) loaded" in result.output
    frame = gpd.GeoDataFrame({"site_id": ["X"]}, geometry=[Point(LON, LAT)], crs=4326)
    bad = tmp_path / "bad.geojson"
    pyogrio.write_dataframe(frame, bad, driver="GeoJSON")
    result = runner.invoke(app, ["sites", "check", str(bad)])
    assert result.exit_code == 1
    assert "REJECTED X: is a Point" in result.output
    result = runner.invoke(
        app, ["sites", "check", str(write_format(sample_frame(), tmp_path, "csv"))]
    )
    assert result.exit_code == 1
    assert "--crs" in result.output


def test_malformed_geojson_features_are_named_and_the_good_ones_load(tmp_path: Path) -> None:
    """One broken feature among good ones (an unclosed ring, a too short ring, no geometry,
    an unknown type) used to crash the reader or vanish silently."""
    import json

    good = [list(c) for c in square(0).exterior.coords]
    other = [list(c) for c in square(2).exterior.coords]
    features = [
        {"type": "Feature", "properties": {"site_id": "G1"},
         "geometry": {"type": "Polygon", "coordinates": [good]}},
        {"type": "Feature", "properties": {"site_id": "B1"},
         "geometry": {"type": "Polygon", "coordinates": [good[:2]]}},  # a too short ring
        {"type": "Feature", "properties": {"site_id": "B2"}, "geometry": None},
        {"type": "Feture", "properties": {"site_id": "B3"},
         "geometry": {"type": "Polygon", "coordinates": [other]}},
        {"type": "Feature", "properties": {"site_id": "G2"},
         "geometry": {"type": "Polygon", "coordinates": [other]}},
    ]  # fmt: skip
    path = tmp_path / "mixed.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    registry = load_sites(path)
    assert list(registry.sites["site_id"]) == ["G1", "G2"]
    rejected = {issue.feature: issue.problem for issue in registry.report.rejected}
    assert set(rejected) == {"B1", "B2", "B3"}  # every input feature is accounted for
    assert "geometry cannot be read" in rejected["B1"]
    assert "no geometry" in rejected["B2"]
    assert "not a GeoJSON Feature" in rejected["B3"]


def test_a_detection_touching_a_site_is_zero_metres_from_it_at_tolerance_zero() -> None:
    from pyproj import CRS

    from geo.matching import MatchFlag, match_findings

    utm = CRS.from_epsg(32650)
    site = box(500_000, 4_000_000, 500_100, 4_000_100)
    registry = gpd.GeoDataFrame({"site_id": ["S1"]}, geometry=[site], crs=utm)
    touching = box(500_100, 4_000_010, 500_110, 4_000_020)  # shares the site's east edge
    matches = match_findings([touching], registry, 0.0, utm)
    assert matches.distance_m[0] == 0.0 and matches.site_id[0] == "S1"
    assert MatchFlag(int(matches.flag[0])) is MatchFlag.NEAR_BOUNDARY
