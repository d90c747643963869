"""The notice service with its files in S3-compatible storage (a real SeaweedFS server): frames,
their metadata job and detection job, the frame image, evidence crops, map overlays and
rectification photos all go through the bucket, and nothing lands in the local folders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import SecretStr

from dustpatrol.settings import Settings, StorageSettings
from dustpatrol.storage import S3Storage, content_key
from tests.api.conftest import World
from tests.api.test_evidence_api import finding_with_frame, frame_jpeg
from tests.api.test_map_api import upload_sim_frame
from tests.api.test_sites_api import imported as imported
from tests.conftest import S3Server


@pytest.fixture
def settings(database_url: str, tmp_path: Path, s3_server: S3Server) -> Settings:
    """The usual test settings, with the files in a fresh prefix of the test bucket."""
    return Settings.model_validate(
        {
            "database": {"url": database_url},
            "paths": {"data_dir": str(tmp_path / "var"), "frames_dir": str(tmp_path / "frames")},
            "storage": StorageSettings(
                url=f"s3://{s3_server.bucket}/{s3_server.new_prefix()}",
                endpoint_url=s3_server.endpoint_url,
                access_key_id=s3_server.access_key_id,
                secret_access_key=SecretStr(s3_server.secret_access_key),
            ).model_dump(),
        }
    )


def _bucket(settings: Settings) -> S3Storage:
    config = settings.storage
    assert config.secret_access_key is not None
    return S3Storage(
        config.url,
        endpoint_url=config.endpoint_url,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key.get_secret_value(),
    )


def test_the_service_keeps_its_files_in_the_bucket(imported: World, tmp_path: Path) -> None:
    settings = imported.settings
    bucket = _bucket(settings)
    analyst = imported.login("analyst")
    flight = imported.client.post("/flights", json={"name": "s3"}, headers=analyst).json()["id"]
    # a real RTK-tagged frame: its metadata job reads it back from the bucket
    frame_id = upload_sim_frame(imported, flight)
    frame = imported.client.get(f"/flights/{flight}/frames", headers=analyst).json()[0]
    assert frame["status"] == "ready" and frame["id"] == frame_id
    key = content_key("frames", frame["sha256"])
    stored = bucket.get(key)
    image = imported.client.get(f"/frames/{frame_id}/image", headers=analyst)
    assert image.status_code == 200 and image.content == stored
    overlay = imported.client.get(f"/frames/{frame_id}/overlay", headers=analyst)
    assert overlay.status_code == 200, overlay.text
    assert bucket.exists(content_key("overlays", frame["sha256"], ".png"))
    # an evidence crop, rendered from the bucket's frame and cached in the bucket
    finding = finding_with_frame(imported)
    crop = imported.client.get(finding["evidence"][0]["image"], headers=analyst)
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
    assert imported.client.get(finding["evidence"][0]["image"], headers=analyst).content == (
        crop.content
    )
    # a rectification photo, served back and printed in the notice PDF
    notice = imported.client.post(f"/findings/{finding['id']}/confirm", headers=analyst).json()
    number = notice["notice"]
    housing = imported.login("housing")
    photo = imported.client.post(
        f"/notices/{number}/photos",
        files={"file": ("after.jpg", io.BytesIO(frame_jpeg()), "image/jpeg")},
        headers=housing,
    )
    assert photo.status_code == 201, photo.text
    sha = photo.json()["sha256"]
    assert bucket.get(content_key("photos", sha)) == frame_jpeg()
    served = imported.client.get(f"/notices/{number}/photos/{sha}", headers=housing)
    assert served.status_code == 200 and served.content == frame_jpeg()
    pdf = imported.client.get(f"/notices/{number}/pdf", headers=housing)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # nothing went to the local folders
    assert not (tmp_path / "frames").exists()
    assert not any((tmp_path / "var" / kind).exists() for kind in ("photos", "crops", "overlays"))


def test_a_frame_gone_from_the_bucket_is_a_clear_404(imported: World) -> None:
    analyst = imported.login("analyst")
    flight = imported.client.post("/flights", json={"name": "s3"}, headers=analyst).json()["id"]
    frame_id = upload_sim_frame(imported, flight)
    frame = imported.client.get(f"/flights/{flight}/frames", headers=analyst).json()[0]
    _bucket(imported.settings).delete(content_key("frames", frame["sha256"]))
    gone = imported.client.get(f"/frames/{frame_id}/image", headers=analyst)
    assert gone.status_code == 404 and "missing" in gone.json()["detail"]


def test_a_store_that_is_down_refuses_uploads_with_a_503(imported: World) -> None:
    """The same database, object storage that does not answer: the upload is refused with a
    503 and Retry-After, and nothing of it is recorded."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.api.conftest import PASSWORD

    down = imported.settings.model_copy(
        update={
            "storage": imported.settings.storage.model_copy(
                update={"endpoint_url": "http://127.0.0.1:9"}  # nothing listens there
            )
        }
    )
    app = create_app(down)
    with TestClient(app) as client:
        token = client.post("/auth/token", data={"username": "analyst", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        flight = client.post("/flights", json={"name": "down"}, headers=headers).json()["id"]
        refused = client.post(
            f"/flights/{flight}/frames",
            files={"file": ("DJI_0001.JPG", io.BytesIO(frame_jpeg()), "image/jpeg")},
            headers=headers,
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "30"
        assert "cannot be reached" in refused.json()["detail"]
        assert client.get(f"/flights/{flight}/frames", headers=headers).json() == []
        # a load balancer takes this process out of rotation, and keeps it alive
        readiness = client.get("/health/ready")
        assert readiness.status_code == 503 and readiness.headers["Retry-After"] == "10"
        checks = readiness.json()["checks"]
        assert checks["database"] == "ok" and "cannot be reached" in checks["storage"]
        assert client.get("/health/live").json() == {"status": "ok"}
    assert imported.client.get("/health/ready").json() == {
        "status": "ok",
        "checks": {"database": "ok", "storage": "ok"},
    }
    app.state.engine.dispose()
