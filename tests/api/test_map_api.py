"""The analysts' map: its data (GeoJSON, filters, isolation) and the page in a real Chromium."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
import uvicorn
from shapely.geometry import box, mapping

from api.app import create_app
from api.db import make_engine, session_factory
from api.models.flights import Frame
from dustpatrol.settings import Settings
from tests.api.conftest import PASSWORD, World
from tests.api.test_evidence_api import finding_with_frame
from tests.api.test_notices_api import findings_for, new_flight, post
from tests.api.test_sites_api import LAT, LON
from tests.api.test_sites_api import imported as imported
from tests.conftest import unavailable

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


def upload_sim_frame(world: World, flight: int) -> int:
    """A simulated RTK-tagged nadir JPEG taken over S1, uploaded and processed by the worker;
    returns its frame id."""
    import io

    from geo.crs import WGS84, transformer
    from sim.camera import PoseNoise, camera_preset
    from sim.kinds import GnssMode
    from sim.shots import pose_at, shoot
    from sim.world import generate_district
    from tests.api.test_flights_api import wait_for_job

    district = generate_district(5, origin_lat=LAT, origin_lon=LON, n_sites=10, extent_m=2000.0)
    east, north = transformer(WGS84, district.crs).transform(LON + 0.0005, LAT + 0.0005)
    shot = shoot(
        district,
        pose_at(district, east, north, 100.0, gimbal_yaw_deg=30.0),
        camera_preset("m3e", 0.08),
        PoseNoise(GnssMode.RTK_FIXED),
        seed=1,
    )
    uploaded = world.client.post(
        f"/flights/{flight}/frames",
        files={"file": ("DJI_0100.JPG", io.BytesIO(shot.jpeg), "image/jpeg")},
        headers=world.login("analyst"),
    )
    assert uploaded.status_code == 201, uploaded.text
    assert wait_for_job(world, uploaded.json()["job_id"])["state"] == "done"
    return int(uploaded.json()["frame"]["id"])


def seeded(world: World) -> dict[str, object]:
    """S1 with a confirmed exposed-soil finding (photo uploaded) and so an issued notice, S2
    with a pending road-dust finding, and a flight with a track of two footprinted frames."""
    finding = finding_with_frame(world)
    analyst = world.login("analyst")
    notice = world.client.post(f"/findings/{finding['id']}/confirm", headers=analyst).json()
    flight = new_flight(world)
    post(world, flight, findings_for(world, "S2", "road_dust", 12.0))
    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        for i in range(2):
            lon, lat = LON + 0.001 + 0.002 * i, LAT + 0.0005
            session.add(
                Frame(
                    flight_id=flight,
                    sha256=f"{flight:032d}{i:032d}",
                    filename=f"DJI_{i:04d}.JPG",
                    size_bytes=1,
                    status="ready",
                    lon_deg=lon,
                    lat_deg=lat,
                    captured_at=datetime.now(UTC) + timedelta(seconds=i),
                    footprint_geojson=json.dumps(
                        mapping(box(lon - 0.0008, lat - 0.0006, lon + 0.0008, lat + 0.0006))
                    ),
                )
            )
        session.commit()
    return {"finding": finding["id"], "notice": notice["notice"], "flight": flight}


def test_map_data_colours_sites_by_notice_and_carries_findings_and_tracks(
    imported: World,
) -> None:
    seed = seeded(imported)
    data = imported.client.get("/map/data", headers=imported.login("analyst")).json()
    states = {f["id"]: f["properties"]["state"] for f in data["sites"]["features"]}
    assert states == {"S1": "issued", "S2": "none", "S3": "none"}
    findings = {f["id"]: f["properties"] for f in data["findings"]["features"]}
    assert findings[seed["finding"]]["notice"] == seed["notice"]
    assert findings[seed["finding"]]["images"] == [f"/findings/{seed['finding']}/evidence/0"]
    assert {p["class"] for p in findings.values()} == {"exposed_soil", "road_dust"}
    kinds = [f["properties"]["kind"] for f in data["flights"]["features"]]
    assert kinds.count("track") == 1 and kinds.count("footprint") == 2
    track = next(f for f in data["flights"]["features"] if f["properties"]["kind"] == "track")
    assert track["geometry"]["type"] == "LineString" and len(track["geometry"]["coordinates"]) == 2


def test_map_data_filters_and_bureau_isolation(imported: World) -> None:
    seeded(imported)
    analyst = imported.login("analyst")
    dust = imported.client.get(
        "/map/data", params={"finding_class": "road_dust"}, headers=analyst
    ).json()
    assert {f["properties"]["class"] for f in dust["findings"]["features"]} == {"road_dust"}
    assert all(f["properties"]["state"] == "none" for f in dust["sites"]["features"])
    urban = imported.client.get(
        "/map/data", params={"bureau": "县城市管理局"}, headers=analyst
    ).json()
    assert [f["id"] for f in urban["sites"]["features"]] == ["S3"]
    assert urban["findings"]["features"] == []
    old = imported.client.get(
        "/map/data", params={"since": "2020-01-01", "until": "2020-01-31"}, headers=analyst
    ).json()
    assert old["findings"]["features"] == [] and old["flights"]["features"] == []
    everything = imported.client.get("/map/data", headers=analyst).json()
    assert everything["truncated"] is False
    west, south, east, north = everything["extent"]
    assert west == pytest.approx(LON) and south == pytest.approx(LAT)
    assert east == pytest.approx(LON + 0.011) and north == pytest.approx(LAT + 0.001)
    third = f"{LON + 0.0095},{LAT},{LON + 0.0115},{LAT + 0.001}"  # only S3's square
    in_view = imported.client.get("/map/data", params={"bbox": third}, headers=analyst).json()
    assert [f["id"] for f in in_view["sites"]["features"]] == ["S3"]
    assert in_view["extent"] is None
    bad_bbox = imported.client.get("/map/data", params={"bbox": "1,2,3"}, headers=analyst)
    assert bad_bbox.status_code == 422 and "bbox" in bad_bbox.json()["detail"]
    housing = imported.client.get("/map/data", headers=imported.login("housing")).json()
    assert sorted(f["id"] for f in housing["sites"]["features"]) == ["S1", "S2"]
    assert housing["flights"]["features"] == []  # flights are the staff's business
    other = imported.client.get("/map/data", headers=imported.login("urban")).json()
    assert other["findings"]["features"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"finding_class": "smoke"}, "finding_class: Input should be 'exposed_soil'"),
        ({"bureau": "no such bureau"}, "no bureau named"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since must be on or before until"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_map_data_bad_filters_are_named(
    imported: World, params: dict[str, str], message: str
) -> None:
    response = imported.client.get("/map/data", params=params, headers=imported.login("analyst"))
    assert response.status_code == 422
    assert message in json.dumps(response.json(), ensure_ascii=False)


def test_map_data_needs_a_login_and_the_page_does_not(imported: World) -> None:
    assert imported.client.get("/map/data").status_code == 401
    page = imported.client.get("/map")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/vendor/leaflet/leaflet.js" in page.text
    assert '"tileUrl": null' in page.text  # no basemap unless configured
    leaflet = imported.client.get("/static/vendor/leaflet/leaflet.js")
    assert leaflet.status_code == 200 and "Leaflet" in leaflet.text[:500]


def test_the_vendored_leaflet_is_the_locked_npm_package() -> None:
    root = Path(__file__).resolve().parents[2]
    lock = json.loads((root / "web" / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/leaflet"]["version"]
    built = (root / "api" / "static" / "vendor" / "leaflet" / "VERSION").read_text().strip()
    assert built == locked, "run `make web` to rebuild api/static/vendor from web/"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Findings posted by a client: the frames uploaded here are the map's imagery, not
    analysed by the service (whose own findings would join the posted ones)."""
    return Settings.model_validate(
        {
            "database": {"url": database_url},
            "paths": {"data_dir": str(tmp_path / "var")},
            "detection": {"in_service": False},
        }
    )


@pytest.fixture
def live_server(imported: World) -> Iterator[str]:
    """The same database served over HTTP on 127.0.0.1 for the browser."""
    app = create_app(imported.settings, migrate=False, worker=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_map_page_draws_sites_and_findings_and_shows_the_photo(
    imported: World, live_server: str
) -> None:
    if not CHROMIUM.exists():
        unavailable(f"Chromium not installed at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    seed = seeded(imported)
    upload_sim_frame(imported, int(str(seed["flight"])))
    hosts: set[str] = set()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on(
                "request",
                lambda request: (
                    hosts.add(urlparse(request.url).hostname or "")
                    if request.url.startswith(("http:", "https:", "ws:", "wss:"))
                    else None
                ),
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{live_server}/map")
            page.fill("input[name=username]", "analyst")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            assert page.locator("path.site").count() == 3
            assert page.locator("path.site-issued").count() == 1
            assert page.locator("path.finding").count() == 2
            assert page.locator("path.track").count() == 1
            assert page.locator("path.footprint").count() == 3
            # The flight's own photo as imagery, once the layer is switched on.
            page.locator("label", has_text="航片 imagery").locator("input").check()
            page.wait_for_function(
                "[...document.querySelectorAll('img.imagery')].some(i => i.naturalWidth > 0)",
                timeout=15_000,
            )
            options = page.locator("select[name=bureau] option").all_inner_texts()
            assert "县住房和城乡建设局" in options
            page.locator(f"path.finding-{seed['finding']}").click()
            photo = page.wait_for_selector(".leaflet-popup img.evidence", timeout=15_000)
            assert photo is not None
            page.wait_for_function(
                "document.querySelector('.leaflet-popup img.evidence').naturalWidth > 0"
            )
            popup = page.locator(".leaflet-popup-content").inner_text()
            assert str(seed["notice"]) in popup and "S1" in popup
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.wait_for_timeout(400)  # the popup's fade-in
            page.screenshot(path=str(ARTIFACTS / "map.png"))
            # The class filter redraws without the other class.
            page.select_option("select[name=finding_class]", "road_dust")
            page.click("#filters button[type=submit]")
            page.wait_for_selector("body[data-loaded=true]")
            assert page.locator("path.finding").count() == 1
        finally:
            browser.close()
    assert errors == []
    assert hosts == {"127.0.0.1"}  # nothing from the internet: no CDN, no basemap


def test_a_large_registry_comes_a_view_at_a_time(imported: World) -> None:
    from api.models.users import User
    from api.services.mapdata import map_data

    seeded(imported)
    with session_factory(make_engine(imported.settings.database.url))() as session:
        analyst = session.query(User).filter_by(username="analyst").one()
        first = map_data(session, analyst, max_sites=2)
        assert first["truncated"] is True and len(first["sites"]["features"]) == 2
        assert first["extent"] is not None
        # The findings come for the sites sent, not for the others.
        sent = {f["id"] for f in first["sites"]["features"]}
        assert {f["properties"]["site_id"] for f in first["findings"]["features"]} <= sent


def test_a_frame_becomes_map_imagery_on_its_footprint(imported: World) -> None:
    import io

    from PIL import Image

    flight = new_flight(imported)
    frame_id = upload_sim_frame(imported, flight)
    analyst = imported.login("analyst")
    response = imported.client.get(f"/frames/{frame_id}/overlay", headers=analyst)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    west, south, east, north = (float(v) for v in response.headers["x-bounds"].split(","))
    footprint = next(
        f
        for f in imported.client.get("/map/data", headers=analyst).json()["flights"]["features"]
        if f["properties"].get("overlay") == f"/frames/{frame_id}/overlay"
    )
    lons = [c[0] for c in footprint["geometry"]["coordinates"][0]]
    lats = [c[1] for c in footprint["geometry"]["coordinates"][0]]
    assert west == pytest.approx(min(lons), abs=2e-6) and east == pytest.approx(max(lons), abs=2e-6)
    assert south == pytest.approx(min(lats), abs=2e-6)
    assert north == pytest.approx(max(lats), abs=2e-6)
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.mode == "RGBA" and overlay.width == 768
    alpha = overlay.getchannel("A")
    assert alpha.getpixel((overlay.width // 2, overlay.height // 2)) == 255  # the photo
    assert alpha.getpixel((0, 0)) == 0  # rotated 30 degrees: the box's corners are empty
    again = imported.client.get(f"/frames/{frame_id}/overlay", headers=analyst)
    assert again.content == response.content  # from the cache
    assert (
        imported.client.get(
            f"/frames/{frame_id}/overlay", headers=imported.login("housing")
        ).status_code
        == 403
    )
    assert imported.client.get("/frames/999999/overlay", headers=analyst).status_code == 404
