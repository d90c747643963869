"""`train export-reviewed`: the findings analysts confirmed or rejected in the notice service
become a YOLO-seg dataset: confirmed outlines projected into their frames as labels, rejected
ones as hard negatives, unreviewed neighbours and missing frames left out with the reason.

The frame is a simulated shot with exact metadata, so the projected label can be checked
against the renderer's own class mask (an independent code path)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely import affinity
from shapely.geometry import Point
from typer.testing import CliRunner

from api.db import make_engine, session_factory
from dustpatrol.cli import app
from dustpatrol.errors import DustpatrolError
from dustpatrol.reviewed import export_reviewed
from dustpatrol.settings import Settings
from geo.matching import Observation, findings_geojson, merge_observations
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode, GroundTruthClass
from sim.shots import pose_at, shoot
from sim.world import District, Patch, generate_district
from tests.api.conftest import World
from tests.api.test_flights_api import upload as upload_frame
from tests.api.test_notices_api import new_flight, post
from tests.api.test_sites_api import upload as upload_sites
from vision.labels import rasterise_instances, read_yolo_labels

runner = CliRunner()
GSD = 0.1
IMGSZ = 256


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Findings posted by a client (`analyze --api`): the service keeps the frames for the
    crops but does not detect in them itself."""
    return Settings.model_validate(
        {
            "database": {"url": database_url},
            "paths": {"data_dir": str(tmp_path / "var")},
            "detection": {"in_service": False},
        }
    )


def _soil_patch(district: District) -> Patch:
    """A whole exposed-soil patch of a good size, small enough for one crop."""
    for patch in sorted(district.patches, key=lambda p: -p.area_m2):
        if (
            patch.gt_class is GroundTruthClass.EXPOSED_SOIL
            and patch.geometry.geom_type == "Polygon"
        ):
            x0, y0, x1, y1 = patch.geometry.bounds
            if max(x1 - x0, y1 - y0) < 0.6 * IMGSZ * GSD and patch.area_m2 > 60:
                return patch
    raise AssertionError("no suitable exposed-soil patch in the district")


def _ids(world: World, flight: int) -> dict[str, int]:
    found = world.client.get(
        "/findings", params={"flight": flight}, headers=world.login("analyst")
    ).json()
    return {f["finding_class"]: f["id"] for f in found}


def _review(world: World, finding: int, verdict: str) -> None:
    response = world.client.post(f"/findings/{finding}/{verdict}", headers=world.login("analyst"))
    assert response.status_code == 200, response.text


def _export(world: World, out: Path) -> object:
    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        return export_reviewed(session, world.settings, out, imgsz=IMGSZ, gsd_m=GSD)


def test_reviews_become_labels_and_hard_negatives(world: World, tmp_path: Path) -> None:
    district = generate_district(9003, n_sites=10, extent_m=2_000.0)
    write_district(district, tmp_path / "world")
    imported = upload_sites(world, tmp_path / "world" / "sites.geojson", who="admin")
    assert imported.status_code == 200, imported.text  # type: ignore[attr-defined]
    soil = _soil_patch(district)
    centre = soil.geometry.centroid
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 60.0, gimbal_yaw_deg=20.0),
        camera_preset("m3e", 0.3),
        PoseNoise(GnssMode.PERFECT),
        seed=1,
    )
    flight = new_flight(world)
    assert upload_frame(world, flight, shot.jpeg, name="DJI_0001.JPG").status_code == 201
    # A: the real soil patch. D: "road dust" the model might have called on the grass 8 m
    # beside it (inside A's crop). E: soil whose frame was never uploaded.
    near = Point(centre.x + 8.0, centre.y + 8.0).buffer(2.0)
    elsewhere = affinity.translate(soil.geometry, 500.0, 0.0)
    observations = [
        Observation(
            "DJI_0001", "exposed_soil", soil.geometry, 0.9, 0.1, (0, 0, 9, 9), soil.site_id
        ),
        Observation("DJI_0001", "road_dust", near, 0.6, 0.1, (0, 0, 9, 9), soil.site_id),
    ]
    assert post(world, flight, findings_geojson(merge_observations(observations, district.crs)))
    other = new_flight(world)
    lost = Observation("DJI_0099", "covered_soil", elsewhere, 0.9, 0.1, (0, 0, 9, 9), soil.site_id)
    assert post(world, other, findings_geojson(merge_observations([lost], district.crs)))
    _review(world, _ids(world, other)["covered_soil"], "confirm")
    ids = _ids(world, flight)
    _review(world, ids["exposed_soil"], "confirm")

    # D not reviewed yet: A's crop would show it unlabelled -> left out, and said so
    first = _export(world, tmp_path / "first")
    assert first.images == {"train": 0, "val": 0}  # type: ignore[attr-defined]
    assert any(
        f"finding {ids['road_dust']}, not reviewed yet" in reason
        for reason in first.skipped  # type: ignore[attr-defined]
    )

    _review(world, ids["road_dust"], "reject")
    result = _export(world, tmp_path / "second")
    manifest = json.loads((tmp_path / "second" / "dataset.json").read_text())
    assert {(c["finding"], c["review"]) for c in manifest["crops"]} == {
        (ids["exposed_soil"], "confirmed"),
        (ids["road_dust"], "rejected"),
    }
    assert result.labels == 2 and result.negatives == 0  # type: ignore[attr-defined]
    assert any("DJI_0099" in r and "never uploaded" in r for r in result.skipped)  # type: ignore[attr-defined]
    truth = shot.class_mask  # at full frame size, from the renderer
    for crop in manifest["crops"]:
        image_path = tmp_path / "second" / crop["image"]
        image = cv2.imread(str(image_path))
        assert image is not None and image.shape[:2] == (IMGSZ, IMGSZ)
        label_file = (
            tmp_path / "second" / "labels" / image_path.parent.name / f"{image_path.stem}.txt"
        )
        instances = read_yolo_labels(label_file, IMGSZ, IMGSZ)
        assert [i.class_id for i in instances] == [0]  # only the confirmed soil, never D
        label = rasterise_instances(instances, IMGSZ, IMGSZ) == 0
        if crop["review"] == "confirmed":  # centred on the patch: all of it, at 10 cm/px
            assert label.sum() * GSD**2 == pytest.approx(soil.area_m2, rel=0.05)
        # the label lies on the soil of the renderer's own mask, cut at the same window
        width, height = crop["decoded_size"]
        left, top = crop["window"]
        scaled = cv2.resize(truth, (width, height), interpolation=cv2.INTER_NEAREST)
        window = np.zeros((IMGSZ, IMGSZ), dtype=np.uint8)
        piece = scaled[top : top + IMGSZ, left : left + IMGSZ]
        window[: piece.shape[0], : piece.shape[1]] = piece
        on_soil = (window[label] == GroundTruthClass.EXPOSED_SOIL).mean()
        assert on_soil > 0.9, on_soil


def test_nothing_reviewed_is_a_clear_refusal(world: World, tmp_path: Path) -> None:
    with pytest.raises(DustpatrolError, match="no finding in the database has been confirmed"):
        _export(world, tmp_path / "none")
    outcome = runner.invoke(
        app,
        ["train", "export-reviewed", "--out", str(tmp_path / "cli"), "--imgsz", "100"],
        env={"DUSTPATROL_DATABASE__URL": world.settings.database.url},
    )
    assert outcome.exit_code != 0 and "multiple of 32" in outcome.output
