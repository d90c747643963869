"""Evidence crops: the frame cut around a finding's pixel box, served as a JPEG."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw

from tests.api.conftest import World
from tests.api.test_flights_api import upload
from tests.api.test_notices_api import findings_for, new_flight, post
from tests.api.test_sites_api import imported as imported

SOIL = (150, 105, 60)
GRASS = (60, 140, 60)


def frame_jpeg() -> bytes:
    """A 400x300 JPEG: grass, with a soil patch where the finding's box (10..90) lies."""
    image = Image.new("RGB", (400, 300), GRASS)
    ImageDraw.Draw(image).rectangle((10, 10, 89, 89), fill=SOIL)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def finding_with_frame(world: World, frame_name: str = "DJI_0001.JPG") -> dict[str, Any]:
    flight = new_flight(world)
    assert upload(world, flight, frame_jpeg(), name=frame_name).status_code == 201
    assert post(world, flight, findings_for(world, "S1", "exposed_soil", 25.0)).status_code == 200
    findings = world.client.get(
        "/findings", params={"flight": flight}, headers=world.login("analyst")
    ).json()
    assert len(findings) == 1
    return dict(findings[0])


def test_evidence_is_served_as_a_crop_around_the_box(imported: World) -> None:
    finding = finding_with_frame(imported)
    url = finding["evidence"][0]["image"]
    assert url == f"/findings/{finding['id']}/evidence/0"
    response = imported.client.get(url, headers=imported.login("analyst"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    crop = Image.open(io.BytesIO(response.content))
    # Box 10..90 with a 24 px margin, clipped at the frame's left and top edges.
    assert crop.size == (114, 114)
    centre = crop.getpixel((50, 50))
    assert isinstance(centre, tuple)
    assert all(abs(a - b) < 12 for a, b in zip(centre, SOIL, strict=False))
    outline = crop.getpixel((10, 50))  # the red box outline
    assert isinstance(outline, tuple) and outline[0] > 180 and outline[1] < 90
    # A second request comes from the cache, byte for byte.
    again = imported.client.get(url, headers=imported.login("analyst"))
    assert again.content == response.content


def test_the_responsible_bureau_sees_the_evidence_and_no_other(imported: World) -> None:
    finding = finding_with_frame(imported)
    url = f"/findings/{finding['id']}/evidence/0"
    assert imported.client.get(url, headers=imported.login("housing")).status_code == 200
    other = imported.client.get(url, headers=imported.login("urban"))
    assert other.status_code == 404
    assert (
        imported.client.get(
            f"/findings/{finding['id']}", headers=imported.login("urban")
        ).status_code
        == 404
    )


def test_missing_evidence_is_a_clear_404(imported: World) -> None:
    finding = finding_with_frame(imported, frame_name="DJI_0999.JPG")  # not the evidence frame
    analyst = imported.login("analyst")
    missing_frame = imported.client.get(f"/findings/{finding['id']}/evidence/0", headers=analyst)
    assert missing_frame.status_code == 404
    assert "DJI_0001" in missing_frame.json()["detail"]
    assert "upload it" in missing_frame.json()["detail"]
    no_entry = imported.client.get(f"/findings/{finding['id']}/evidence/3", headers=analyst)
    assert no_entry.status_code == 404 and "no entry 3" in no_entry.json()["detail"]
    assert imported.client.get("/findings/99999/evidence/0", headers=analyst).status_code == 404


def test_bad_evidence_is_refused_at_ingestion_and_outside_boxes_at_cropping(
    imported: World,
) -> None:
    flight = new_flight(imported)
    collection = findings_for(imported, "S1", "exposed_soil", 25.0)
    collection["features"][0]["properties"]["evidence"][0]["pixel_box"] = [50, 50, 10, 10]
    refused = post(imported, flight, collection)
    assert refused.status_code == 422
    assert "evidence 0" in refused.json()["detail"] and "pixel_box" in refused.json()["detail"]
    collection["features"][0]["properties"]["evidence"] = [{"pixel_box": [1, 1, 2, 2]}]
    assert "frame_id" in post(imported, flight, collection).json()["detail"]
    # A box beyond the frame is accepted (the frame may come later) but cannot be cropped.
    assert upload(imported, flight, frame_jpeg()).status_code == 201
    collection["features"][0]["properties"]["evidence"] = [
        {"frame_id": "DJI_0001", "pixel_box": [1000, 1000, 1100, 1100], "confidence": 0.9}
    ]
    assert post(imported, flight, collection).status_code == 200
    finding = imported.client.get(
        "/findings", params={"flight": flight}, headers=imported.login("analyst")
    ).json()[0]
    outside = imported.client.get(
        f"/findings/{finding['id']}/evidence/0", headers=imported.login("analyst")
    )
    assert outside.status_code == 422 and "outside the 400x300 frame" in outside.json()["detail"]
