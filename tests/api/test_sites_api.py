"""Sites through the API: import, filters, GeoJSON, bureau isolation, problems."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import Point, box

from tests.api.conftest import World

LON, LAT = 115.45, 36.48
D = 0.001


def registry_file(tmp_path: Path, rows: list[tuple[str, str, str, object]]) -> Path:
    frame = gpd.GeoDataFrame(
        {
            "site_id": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "responsible_bureau": [r[2] for r in rows],
            "kind": ["construction"] * len(rows),
        },
        geometry=[r[3] for r in rows],
        crs=4326,
    )
    path = tmp_path / "registry.geojson"
    pyogrio.write_dataframe(frame, path, driver="GeoJSON")
    return path


def square(i: int) -> object:
    return box(LON + 2 * i * D, LAT, LON + 2 * i * D + D, LAT + D)


def upload(world: World, path: Path, who: str = "analyst", **params: str) -> object:
    with path.open("rb") as handle:
        return world.client.post(
            "/sites/import",
            files={"file": (path.name, handle, "application/geo+json")},
            params=params,
            headers=world.login(who),
        )


@pytest.fixture
def imported(world: World, tmp_path: Path) -> World:
    path = registry_file(
        tmp_path,
        [
            ("S1", "东关工地", "县住房和城乡建设局", square(0)),
            ("S2", "西关工地", "县住房和城乡建设局", square(1)),
            ("S3", "城关饭店", "县城市管理局", square(5)),
        ],
    )
    response = upload(world, path)
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    assert response.json()["created"] == 3  # type: ignore[attr-defined]
    return world


def test_import_is_idempotent_and_updates_changed_sites(imported: World, tmp_path: Path) -> None:
    path = registry_file(
        tmp_path,
        [
            ("S1", "东关工地", "县住房和城乡建设局", square(0)),
            ("S2", "西关工地（二期）", "县住房和城乡建设局", square(1)),
            ("S3", "城关饭店", "县城市管理局", square(5)),
        ],
    )
    report = upload(imported, path).json()  # type: ignore[attr-defined]
    assert (report["created"], report["updated"]) == (0, 1)
    again = upload(imported, path).json()  # type: ignore[attr-defined]
    assert (again["created"], again["updated"]) == (0, 0)


def test_import_reports_rejections_and_keeps_the_rest(world: World, tmp_path: Path) -> None:
    path = registry_file(
        tmp_path,
        [("OK", "好的", "县城市管理局", square(0)), ("PT", "点", "县城市管理局", Point(LON, LAT))],
    )
    report = upload(world, path).json()  # type: ignore[attr-defined]
    assert report["created"] == 1
    assert report["rejected"] == [
        {"feature": "PT", "problem": "is a Point; a site must be a polygon"}
    ]


def test_import_of_an_unreadable_file_is_a_problem(world: World, tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text("{ not json", encoding="utf-8")
    response = upload(world, path)
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert "cannot be read" in response.json()["detail"]  # type: ignore[attr-defined]


def test_bureau_users_cannot_import(world: World, tmp_path: Path) -> None:
    path = registry_file(tmp_path, [("S1", "x", "县城市管理局", square(0))])
    response = upload(world, path, who="housing")
    assert response.status_code == 403  # type: ignore[attr-defined]


def test_list_filters_by_kind_bureau_and_bbox(imported: World) -> None:
    headers = imported.login("analyst")
    everything = imported.client.get("/sites", headers=headers).json()
    assert [s["site_id"] for s in everything] == ["S1", "S2", "S3"]
    assert everything[0]["area_m2"] == pytest.approx(89.5 * 111.0, rel=0.02)
    urban = imported.client.get("/sites", params={"bureau": "县城市管理局"}, headers=headers).json()
    assert [s["site_id"] for s in urban] == ["S3"]
    bbox = f"{LON - D},{LAT - D},{LON + 1.5 * D},{LAT + 2 * D}"
    near = imported.client.get("/sites", params={"bbox": bbox}, headers=headers).json()
    assert [s["site_id"] for s in near] == ["S1"]
    paged = imported.client.get("/sites", params={"limit": 1, "offset": 1}, headers=headers).json()
    assert [s["site_id"] for s in paged] == ["S2"]


def test_bad_bbox_is_a_problem_naming_the_format(imported: World) -> None:
    response = imported.client.get(
        "/sites", params={"bbox": "1,2,3"}, headers=imported.login("analyst")
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "min_lon,min_lat,max_lon,max_lat" in detail and "'1,2,3'" in detail
    assert "\\d" not in detail  # words, not the regular expression


def test_geojson_is_rfc7946(imported: World) -> None:
    response = imported.client.get("/sites/geojson", headers=imported.login("admin"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    collection = json.loads(response.text)
    assert collection["type"] == "FeatureCollection"
    first = collection["features"][0]
    assert first["geometry"]["type"] == "Polygon"
    lon, lat = first["geometry"]["coordinates"][0][0]
    assert 115 < lon < 116 and 36 < lat < 37  # longitude first
    assert first["properties"]["bureau"] == "县住房和城乡建设局"


@pytest.mark.parametrize("path", ["/sites", "/sites/geojson"])
def test_bureau_users_see_only_their_own_sites(imported: World, path: str) -> None:
    housing = imported.client.get(path, headers=imported.login("housing")).json()
    urban = imported.client.get(path, headers=imported.login("urban")).json()
    assert site_ids(housing) == ["S1", "S2"]
    assert site_ids(urban) == ["S3"]


def site_ids(body: object) -> list[str]:
    """Site ids of a /sites list or a /sites/geojson collection."""
    if isinstance(body, dict):
        return [feature["id"] for feature in body["features"]]
    assert isinstance(body, list)
    return [site["site_id"] for site in body]


def test_a_bureau_user_gets_404_for_another_bureaus_site(imported: World) -> None:
    assert imported.client.get("/sites/S3", headers=imported.login("urban")).status_code == 200
    response = imported.client.get("/sites/S3", headers=imported.login("housing"))
    assert response.status_code == 404
    assert response.json()["title"] == "Not found"
