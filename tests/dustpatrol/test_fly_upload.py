"""`dustpatrol fly --upload`: frames go to the service while the drone flies, and an
unreachable service only delays them (a real service on loopback, a real MAVLink vehicle)."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from dustpatrol.cli import app
from dustpatrol.client import FlightUpload, FolderUploader, ServiceClient
from dustpatrol.demo import ServiceThread
from dustpatrol.settings import DatabaseSettings, PathsSettings, ServerSettings, Settings
from missions.files import write_plan_files
from sim.world import District
from tests.missions.test_fly import address, patrol
from tests.missions.test_fly import vehicle_factory as vehicle_factory

ADMIN_PASSWORD = "correct-horse-battery-staple"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(root: Path, port: int) -> Settings:
    return Settings().model_copy(
        update={
            "paths": PathsSettings(data_dir=root, frames_dir=root / "frames"),
            "database": DatabaseSettings(url=f"sqlite:///{(root / 'dustpatrol.db').resolve()}"),
            "server": ServerSettings(
                host="127.0.0.1",
                port=port,
                admin_username="admin",
                admin_password=SecretStr(ADMIN_PASSWORD),
            ),
        }
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[ServiceThread, Settings, str]]:
    """The service on a free port, and an inspector's API key."""
    settings = _settings(tmp_path / "service", _free_port())
    running = ServiceThread(settings)
    running.start()
    with ServiceClient(running.base_url, username="admin", password=ADMIN_PASSWORD) as admin:
        user = admin.post(
            "/users",
            {"username": "drone-team", "password": "Lantern-orbit-57-kite", "role": "inspector"},
        )
        key = admin.post(f"/users/{user['id']}/api-keys", {"label": "field laptop"})["key"]
    yield running, settings, key
    running.stop()


def test_fly_uploads_every_frame_while_flying(
    district: District,
    vehicle_factory: object,
    tmp_path: Path,
    service: tuple[ServiceThread, Settings, str],
) -> None:
    running, _, key = service
    plan, launch = patrol(district, 1)
    plan_file = next(p for p in write_plan_files(plan, tmp_path / "plan") if p.suffix == ".plan")
    vehicle = vehicle_factory(launch, district)  # type: ignore[operator]
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    result = CliRunner().invoke(
        app,
        [
            "fly",
            str(plan_file),
            "--connect",
            address(vehicle),
            "--log",
            str(tmp_path / "logs"),
            "--frames",
            str(frames),
            "--upload",
            running.base_url,
        ],
        env={"DUSTPATROL_CLIENT__API_KEY": key},
    )
    assert result.exit_code == 0, result.output
    rendered = {p.name for p in vehicle.wait_rendered()}
    assert "frames uploaded to" in result.output
    with ServiceClient(running.base_url, api_key=key) as inspector:
        flight = inspector.get("/flights")[0]
        uploaded = {f["filename"] for f in inspector.get(f"/flights/{flight['id']}/frames")}
    assert flight["name"] == plan.sorties[0].name
    assert uploaded == rendered and len(uploaded) == plan.sorties[0].expected_frames


def test_frames_wait_while_the_service_is_unreachable_and_go_up_when_it_is_back(
    district: District, tmp_path: Path, service: tuple[ServiceThread, Settings, str]
) -> None:
    running, settings, key = service
    client = ServiceClient(running.base_url, api_key=key, retries=0, timeout_s=5.0)
    upload = FlightUpload(client, "link drop")
    source = sorted(
        (Path(__file__).parents[1] / "vision" / "data" / "real_reference").glob("*.jpg")
    )
    assert len(source) >= 3
    folder = tmp_path / "card"
    folder.mkdir()
    running.stop()  # the field link drops
    uploader = FolderUploader(folder, upload, poll_s=0.05)
    uploader.start()
    for path in source[:3]:
        shutil.copy(path, folder / path.name)
    deadline = time.monotonic() + 20
    while uploader.unreachable == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uploader.unreachable > 0 and uploader.seen == set() and upload.failed == []
    back = ServiceThread(settings)  # the same service, the same database, back on its port
    back.start()
    try:
        uploader.finish()
        assert upload.failed == [] and uploader.seen == {p.name for p in source[:3]}
        names = {f["filename"] for f in client.get(f"/flights/{upload.flight_id}/frames")}
        assert names == {p.name for p in source[:3]}
    finally:
        back.stop()


def test_upload_without_a_frames_folder_is_refused_before_flying(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["fly", str(tmp_path / "x.plan"), "--connect", "tcp:127.0.0.1:9", "--upload", "http://h"],
    )
    assert result.exit_code == 1 and "--upload needs --frames" in result.output
