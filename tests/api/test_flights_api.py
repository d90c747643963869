"""Flights, frame uploads, the metadata job and the job queue's retries and recovery."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image, ImageFilter
from sqlalchemy import update
from sqlalchemy.orm import Session

from api.db import make_engine, session_factory
from api.jobs import HANDLERS, enqueue, recover_interrupted, run_job, run_one
from api.models.flights import Job
from dustpatrol.settings import Settings
from sim.camera import PoseNoise, camera_preset
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District, generate_district
from tests.api.conftest import World


@pytest.fixture(scope="module")
def district() -> District:
    return generate_district(3, n_sites=10, extent_m=2000.0)


def sim_jpeg(district: District, seed: int = 0) -> tuple[bytes, Any]:
    centre = district.sites[0].geometry.centroid
    shot = shoot(
        district,
        pose_at(district, centre.x, centre.y, 90.0),
        camera_preset("m3e", 0.08),
        PoseNoise(GnssMode.RTK_FIXED),
        seed=seed,
    )
    return shot.jpeg, shot


def new_flight(world: World, who: str = "analyst") -> int:
    response = world.client.post(
        "/flights", json={"name": "patrol 1", "drone": "M3E-1"}, headers=world.login(who)
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def upload(
    world: World, flight_id: int, data: bytes, name: str = "DJI_0001.JPG", who: str = "analyst"
) -> Any:
    return world.client.post(
        f"/flights/{flight_id}/frames",
        files={"file": (name, io.BytesIO(data), "image/jpeg")},
        headers=world.login(who),
    )


def wait_for_job(world: World, job_id: int) -> dict[str, Any]:
    headers = world.login("analyst")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = world.client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_uploaded_frame_gets_position_and_footprint(world: World, district: District) -> None:
    flight = new_flight(world)
    data, shot = sim_jpeg(district)
    response = upload(world, flight, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["duplicate"] is False and body["frame"]["status"] == "pending"
    assert wait_for_job(world, body["job_id"])["state"] == "done"
    frames = world.client.get(f"/flights/{flight}/frames", headers=world.login("analyst")).json()
    frame = frames[0]
    assert frame["status"] == "ready" and frame["position_quality"] == "rtk_fixed"
    assert frame["lat_deg"] == pytest.approx(shot.reported_pose.lat_deg, abs=1e-9)
    assert frame["relative_alt_m"] == pytest.approx(90.0, abs=0.2)
    image = world.client.get(f"/frames/{frame['id']}/image", headers=world.login("analyst"))
    assert image.status_code == 200 and image.content == data


def test_the_same_frame_uploaded_twice_is_stored_once(world: World, district: District) -> None:
    flight = new_flight(world)
    data, _ = sim_jpeg(district, seed=1)
    first = upload(world, flight, data).json()
    second = upload(world, flight, data, name="copy.jpg").json()
    assert second["duplicate"] is True and second["job_id"] is None
    assert second["frame"]["id"] == first["frame"]["id"]
    assert (
        len(world.client.get(f"/flights/{flight}/frames", headers=world.login("analyst")).json())
        == 1
    )


def test_a_frame_without_position_fails_with_the_missing_tag(world: World) -> None:
    flight = new_flight(world)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (100, 100, 100)).save(buffer, "JPEG")
    body = upload(world, flight, buffer.getvalue()).json()
    job = wait_for_job(world, body["job_id"])
    assert job["state"] == "failed" and "GPSLatitude" in job["error"]
    frame = world.client.get(f"/flights/{flight}/frames", headers=world.login("analyst")).json()[0]
    assert frame["status"] == "failed" and "no position" in frame["error"]


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"GIF89a....", "not a JPEG"), (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "damaged JPEG")],
)
def test_bad_uploads_are_problems(world: World, data: bytes, message: str) -> None:
    flight = new_flight(world)
    response = upload(world, flight, data)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_unknown_flight_and_wrong_role(world: World, district: District) -> None:
    data, _ = sim_jpeg(district, seed=2)
    assert upload(world, 9999, data).status_code == 404
    flight = new_flight(world)
    assert upload(world, flight, data, who="housing").status_code == 403


def _flaky(session: Session, payload: dict[str, Any], settings: Settings) -> None:
    raise RuntimeError("the frame store is not mounted yet")


HANDLERS["test_flaky"] = _flaky


def test_failing_jobs_are_retried_with_back_off_then_fail(settings: Settings) -> None:
    from api.migrate import upgrade

    upgrade(settings.database.url)
    sessions = session_factory(make_engine(settings.database.url))
    with sessions() as session:
        job_id = enqueue(session, "test_flaky", {}, max_attempts=2).id
        session.commit()
    assert run_one(sessions, settings) is True
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "pending" and job.attempts == 1
        assert "not mounted" in (job.error or "")
        assert job.run_after.replace(tzinfo=job.run_after.tzinfo or UTC) > datetime.now(UTC)
        job.run_after = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()
    assert run_one(sessions, settings) is True
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "failed" and job.attempts == 2
    assert run_one(sessions, settings) is False  # nothing left to do


def test_jobs_interrupted_by_a_restart_run_again(settings: Settings) -> None:
    from api.migrate import upgrade

    upgrade(settings.database.url)
    sessions = session_factory(make_engine(settings.database.url))
    held = datetime.now(UTC) + timedelta(minutes=5)
    with sessions() as session:
        job_id = enqueue(session, "test_flaky", {}).id
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state="running", attempts=1, lease_until=held, worker="gone:1")
        )
        session.commit()
    assert run_one(sessions, settings) is False  # a running job under its lease is left...
    assert recover_interrupted(sessions) == 1  # ...until the embedded worker starts again
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "pending"


def test_a_job_whose_worker_died_is_taken_over_when_its_lease_lapses(settings: Settings) -> None:
    """Workers on other machines: no restart of "the" worker; a running job whose lease has
    lapsed is claimed again, says whose attempt was lost, and fails once every attempt was."""
    from api.migrate import upgrade

    upgrade(settings.database.url)
    sessions = session_factory(make_engine(settings.database.url))
    with sessions() as session:
        job_id = enqueue(session, "test_flaky", {}, max_attempts=3).id
        session.commit()

    def claimed_then_lost(attempt: int, worker: str, lease_s: float = -1.0) -> None:
        with sessions() as session:  # kill -9 of its worker: nothing more is written
            lapses = datetime.now(UTC) + timedelta(seconds=lease_s)
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state="running", attempts=attempt, lease_until=lapses, worker=worker)
            )
            session.commit()

    claimed_then_lost(1, "host-1:99", lease_s=60.0)
    assert run_job(sessions, settings, job_id) == "skipped"  # still under its lease
    claimed_then_lost(1, "host-1:99")
    assert run_job(sessions, settings, job_id) == "retry"  # taken over; ran (and failed)
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "pending" and job.attempts == 2
        assert "not mounted" in (job.error or "")
    claimed_then_lost(3, "host-3:99")  # the last attempt died with its worker
    assert run_job(sessions, settings, job_id) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "failed" and job.attempts == 4
        assert "attempt 3 was lost with its worker host-3:99" in (job.error or "")
        assert "no attempts left" in (job.error or "")
        lines = job.history.splitlines()
        assert len(lines) == 4, lines  # taken over, failed, taken over, failed for good
        assert "attempt 1 was lost with its worker host-1:99" in lines[0]
        assert "attempt 2 on" in lines[1] and "not mounted yet; again in 2 s" in lines[1]
    assert run_job(sessions, settings, job_id) == "skipped"  # a late duplicate message


def test_the_service_detects_in_uploaded_frames_and_makes_findings_on_completion(
    world: World, district: District, tmp_path: Any
) -> None:
    """Frames uploaded one by one are analysed by the service's own jobs (the same pipeline
    as `dustpatrol analyze`); completing the flight turns them into findings on sites."""
    from sim.export import write_district

    write_district(district, tmp_path / "world")
    headers = world.login("admin")
    with (tmp_path / "world" / "sites.geojson").open("rb") as registry:
        imported = world.client.post(
            "/sites/import", files={"file": ("sites.geojson", registry)}, headers=headers
        )
    assert imported.status_code == 200, imported.text
    flight = new_flight(world)
    soil: dict[str, float] = {}
    for patch in district.patches:
        soil[patch.site_id] = soil.get(patch.site_id, 0.0) + patch.area_m2
    busiest = sorted(district.sites, key=lambda s: -soil.get(s.site_id, 0.0))[:3]
    for number, site in enumerate(busiest):
        centre = site.geometry.centroid
        shot = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0),
            camera_preset("m3e", 0.25),
            PoseNoise(GnssMode.RTK_FIXED),
            seed=number,
        )
        assert upload(world, flight, shot.jpeg, f"DJI_{number:04d}.JPG").status_code == 201
    with Image.open(io.BytesIO(shot.jpeg)) as last:  # the last frame again, shaken
        blurred = io.BytesIO()
        last.filter(ImageFilter.GaussianBlur(8)).save(
            blurred, "JPEG", exif=last.info["exif"], xmp=last.info["xmp"]
        )
    assert upload(world, flight, blurred.getvalue(), "DJI_0099.JPG").status_code == 201
    done = world.client.post(f"/flights/{flight}/complete", headers=world.login("analyst"))
    assert done.status_code == 202, done.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = world.client.get(f"/flights/{flight}", headers=headers).json()
        if state["analysed_at"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the flight was not analysed in time")
    frames = {
        f["filename"]: f
        for f in world.client.get(f"/flights/{flight}/frames", headers=headers).json()
    }
    assert frames["DJI_0099.JPG"]["analysis"] == "rejected"
    assert "blurred" in frames["DJI_0099.JPG"]["analysis_note"]
    assert all(frames[f"DJI_{n:04d}.JPG"]["analysis"] == "done" for n in range(3))
    findings = world.client.get("/findings", params={"flight": flight}, headers=headers).json()
    assert findings, "nothing found on the three busiest sites of the district"
    names = {s.site_id for s in district.sites}
    for finding in findings:
        assert finding["site"] in names
        assert {e["frame_id"] for e in finding["evidence"]} <= {
            f"DJI_{n:04d}.JPG" for n in range(3)
        }
    evidence = world.client.get(f"/findings/{findings[0]['id']}/evidence/0", headers=headers)
    assert evidence.status_code == 200 and evidence.content.startswith(b"\xff\xd8")
