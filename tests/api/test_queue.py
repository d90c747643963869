"""Scaled out on real engines: jobs on Celery workers over redis-server, frames in SeaweedFS
(S3), PostgreSQL. Messages leave only with a commit; a lost message or a dead worker's job is
sent again by the sweep; and a whole flight through 2 API processes and 2 workers, one of
them killed with SIGKILL in the middle of detection, ends with the same findings, notices and
webhook deliveries as the embedded run, none lost, none twice."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter
from sqlalchemy import select, update

from api.app import create_app
from api.cli import ensure_admin
from api.db import make_engine, session_factory
from api.jobs import enqueue
from api.migrate import upgrade
from api.models.flights import Job
from api.queue import Broker, sweep
from api.services.analysis import FLIGHT_FINDINGS_JOB
from api.services.frames import FRAME_METADATA_JOB
from dustpatrol.settings import Settings
from sim.camera import PoseNoise, camera_preset
from sim.export import write_district
from sim.kinds import GnssMode
from sim.shots import pose_at, shoot
from sim.world import District, generate_district
from tests.api.conftest import PASSWORD, new_postgres_database
from tests.api.test_webhooks import SECRET
from tests.conftest import RedisServer, S3Server

REPO = Path(__file__).resolve().parents[2]


def _queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue`` (kombu keeps a Redis list per queue)."""
    return [json.loads(raw)["headers"] for raw in client.lrange(queue, 0, -1)]


@pytest.fixture
def queued_settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'dustpatrol.db'}"},
            "paths": {"data_dir": str(tmp_path / "var")},
            "queue": {"url": redis_server.url(1), "lease_s": 3.0, "republish_s": 60.0},
        }
    )


def test_a_job_is_sent_when_its_transaction_commits_and_never_when_it_rolls_back(
    queued_settings: Settings,
) -> None:
    upgrade(queued_settings.database.url)
    sessions = session_factory(make_engine(queued_settings.database.url))
    sessions.configure(info={"dispatch": Broker(queued_settings)})
    client = redis.Redis.from_url(queued_settings.queue.url)
    with sessions() as session:
        enqueue(session, FRAME_METADATA_JOB, {"frame_id": 1})
        session.rollback()
    assert _queued(client, "frames") == []
    with sessions() as session:
        frame_job = enqueue(session, FRAME_METADATA_JOB, {"frame_id": 1}).id
        assert _queued(client, "frames") == []  # not before the commit
        flight_job = enqueue(session, FLIGHT_FINDINGS_JOB, {"flight_id": 1}).id
        session.commit()
    frames, notices = _queued(client, "frames"), _queued(client, "notices")
    assert [(m["task"], m["argsrepr"]) for m in frames] == [("dustpatrol.job", f"({frame_job},)")]
    assert [m["argsrepr"] for m in notices] == [f"({flight_job},)"]  # its own queue


def test_the_sweep_sends_again_what_was_lost_once_and_takes_over_dead_workers_jobs(
    queued_settings: Settings,
) -> None:
    upgrade(queued_settings.database.url)
    plain = session_factory(make_engine(queued_settings.database.url))  # no dispatch: "lost"
    broker = Broker(queued_settings)
    client = redis.Redis.from_url(queued_settings.queue.url)
    with plain() as session:
        lost = enqueue(session, FRAME_METADATA_JOB, {"frame_id": 1}).id
        enqueue(  # due in an hour: not sent by the sweep
            session,
            FRAME_METADATA_JOB,
            {"frame_id": 2},
            run_after=datetime.now(UTC) + timedelta(hours=1),
        )
        running = enqueue(session, FLIGHT_FINDINGS_JOB, {"flight_id": 1}).id
        dead = enqueue(session, FLIGHT_FINDINGS_JOB, {"flight_id": 2}).id
        now = datetime.now(UTC)
        for job_id, lease in ((running, now + timedelta(minutes=1)), (dead, now)):
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state="running", lease_until=lease, published_at=now - timedelta(1))
            )
        session.commit()
    time.sleep(0.05)
    assert sweep(plain, broker, queued_settings) == {"jobs": 2, "bureaus": 0}
    assert [m["argsrepr"] for m in _queued(client, "frames")] == [f"({lost},)"]  # not `later`
    assert [m["argsrepr"] for m in _queued(client, "notices")] == [f"({dead},)"]
    assert sweep(plain, broker, queued_settings) == {"jobs": 0, "bureaus": 0}  # sent: once


def test_worker_refuses_without_a_broker_or_with_an_unknown_queue(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    database = f"sqlite:///{tmp_path / 'dustpatrol.db'}"
    upgrade(database)
    base = {**os.environ, "DUSTPATROL_DATABASE__URL": database}
    command = [sys.executable, "-m", "dustpatrol", "worker"]
    alone = subprocess.run(command, env=base, capture_output=True, text=True, timeout=120)
    assert alone.returncode != 0 and "queue.url is not set" in alone.stderr
    queued = {**base, "DUSTPATROL_QUEUE__URL": redis_server.url(2)}
    wrong = subprocess.run(
        [*command, "--queues", "frames,framez"], env=queued, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert wrong.returncode != 0 and "unknown queue(s) framez" in wrong.stderr
    stale = f"sqlite:///{tmp_path / 'empty.db'}"
    unmigrated = {**queued, "DUSTPATROL_DATABASE__URL": stale}
    early = subprocess.run(command, env=unmigrated, capture_output=True, text=True, timeout=120)
    assert early.returncode != 0 and "start `dustpatrol serve`" in early.stderr


# --- the whole flight, embedded and scaled out ---------------------------------------------


@pytest.fixture(scope="module")
def patrol_district() -> District:
    return generate_district(3, n_sites=10, extent_m=2000.0)


def _frames(district: District) -> list[tuple[str, bytes]]:
    """Frames over the four sites with the most soil, and one of them again, shaken."""
    soil: dict[str, float] = {}
    for patch in district.patches:
        soil[patch.site_id] = soil.get(patch.site_id, 0.0) + patch.area_m2
    busiest = sorted(district.sites, key=lambda s: -soil.get(s.site_id, 0.0))[:4]
    frames = []
    for number, site in enumerate(busiest):
        centre = site.geometry.centroid
        shot = shoot(
            district,
            pose_at(district, centre.x, centre.y, 100.0),
            camera_preset("m3e", 0.3),
            PoseNoise(GnssMode.RTK_FIXED),
            seed=number,
        )
        frames.append((f"DJI_{number:04d}.JPG", shot.jpeg))
    with Image.open(io.BytesIO(frames[-1][1])) as last:
        blurred = io.BytesIO()
        last.filter(ImageFilter.GaussianBlur(8)).save(
            blurred, "JPEG", exif=last.info["exif"], xmp=last.info["xmp"]
        )
    frames.append(("DJI_0099.JPG", blurred.getvalue()))
    return frames


def _upload_first_frame(
    client: httpx.Client, district: District
) -> tuple[dict[str, str], dict[str, Any]]:
    """As the admin: a new flight and the first of `_frames` uploaded to it; (the login
    headers, the upload's answer)."""
    token = client.post("/auth/token", data={"username": "admin", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    flight = client.post("/flights", json={"name": "f"}, headers=headers).json()["id"]
    name, data = _frames(district)[0]
    sent = client.post(
        f"/flights/{flight}/frames",
        files={"file": (name, io.BytesIO(data), "image/jpeg")},
        headers=headers,
    )
    assert sent.status_code == 201, sent.text
    return headers, dict(sent.json())


class Receiver:
    """A bureau's system on 127.0.0.1 that accepts everything and counts delivery ids."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries[self.headers["X-Dustpatrol-Delivery"]] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def patrol(
    client: httpx.Client,
    world: Path,
    frames: list[tuple[str, bytes]],
    receiver: Receiver,
    meanwhile: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Bureaus with webhooks, the registry, a flight's frames uploaded and completed; returns
    what came of it once the flight is analysed and every notice delivered."""

    def login(username: str) -> dict[str, str]:
        answer = client.post("/auth/token", data={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    admin = login("admin")
    registry = json.loads((world / "sites.geojson").read_text(encoding="utf-8"))
    for name in sorted({f["properties"]["responsible_bureau"] for f in registry["features"]}):
        made = client.post(
            "/bureaus",
            json={"name": name, "webhook_url": receiver.url, "webhook_secret": SECRET},
            headers=admin,
        )
        assert made.status_code == 201, made.text
    with (world / "sites.geojson").open("rb") as file:
        imported = client.post(
            "/sites/import", files={"file": ("sites.geojson", file)}, headers=admin
        )
    assert imported.status_code == 200, imported.text
    flight = client.post("/flights", json={"name": "patrol", "drone": "M3E-1"}, headers=admin)
    flight_id = flight.json()["id"]
    for name, data in frames:
        sent = client.post(
            f"/flights/{flight_id}/frames",
            files={"file": (name, io.BytesIO(data), "image/jpeg")},
            headers=admin,
        )
        assert sent.status_code == 201, sent.text
    meanwhile()
    assert client.post(f"/flights/{flight_id}/complete", headers=admin).status_code == 202
    deadline = time.monotonic() + 300
    while not client.get(f"/flights/{flight_id}", headers=admin).json()["analysed_at"]:
        assert time.monotonic() < deadline, "the flight was not analysed in time"
        time.sleep(0.3)
    findings = client.get("/findings", params={"flight": flight_id}, headers=admin).json()
    notices = client.get("/notices", params={"limit": 200}, headers=admin).json()
    while sum(receiver.deliveries.values()) < len(notices):
        assert time.monotonic() < deadline, f"deliveries {receiver.deliveries} for {notices}"
        time.sleep(0.3)
    time.sleep(1.0)  # a duplicate delivery would come now
    frames_seen = client.get(f"/flights/{flight_id}/frames", headers=admin).json()
    return {
        "frames": sorted((f["filename"], f["analysis"], f["analysis_note"]) for f in frames_seen),
        "findings": sorted(
            (f["site"], f["finding_class"], round(f["area_m2"], 1), len(f["evidence"]))
            for f in findings
        ),
        "notices": sorted(
            (n["site"], n["bureau"], n["finding_class"], n["state"]) for n in notices
        ),
        "deliveries": sorted(receiver.deliveries.values()),
    }


def _embedded(tmp_path: Path, world: Path, frames: list[tuple[str, bytes]]) -> dict[str, Any]:
    settings = Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'embedded.db'}"},
            "paths": {"data_dir": str(tmp_path / "embedded")},
            "server": {"allow_private_webhooks": True, "admin_password": PASSWORD},
            "notices": {"require_confirmation": False},
        }
    )
    upgrade(settings.database.url)
    ensure_admin(settings)
    receiver = Receiver()
    try:
        with TestClient(create_app(settings, migrate=False)) as client:
            return patrol(client, world, frames, receiver)
    finally:
        receiver.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with new_postgres_database("dp_scale") as url:
        yield url


class Processes:
    """The scaled-out service as processes on this machine, each logging to its own file."""

    def __init__(self, environment: dict[str, str], folder: Path) -> None:
        self.environment = environment
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "dustpatrol", *arguments],
            env=self.environment,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def start_api(self, port: int, *arguments: str) -> str:
        """`dustpatrol serve` on ``port``, once it says it is ready; returns its base URL."""
        self.start("api", "serve", "--port", str(port), *arguments)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert self.running["api"].poll() is None, self.log("api")
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log("api")
            time.sleep(0.2)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.timeout(900)
def test_a_flight_scaled_out_and_a_worker_killed_mid_detection_ends_as_the_embedded_run(
    tmp_path: Path,
    patrol_district: District,
    postgres_database: str,
    redis_server: RedisServer,
    s3_server: S3Server,
) -> None:
    world = tmp_path / "world"
    write_district(patrol_district, world)
    frames = _frames(patrol_district)
    expected = _embedded(tmp_path, world, frames)
    assert expected["findings"], "the embedded run found nothing: no comparison to make"

    port = _free_port()
    environment = {
        **os.environ,
        "DUSTPATROL_DATABASE__URL": postgres_database,
        "DUSTPATROL_PATHS__DATA_DIR": str(tmp_path / "scaled"),
        "DUSTPATROL_STORAGE__URL": f"s3://{s3_server.bucket}/{s3_server.new_prefix()}",
        "DUSTPATROL_STORAGE__ENDPOINT_URL": s3_server.endpoint_url,
        "DUSTPATROL_STORAGE__ACCESS_KEY_ID": s3_server.access_key_id,
        "DUSTPATROL_STORAGE__SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "DUSTPATROL_QUEUE__URL": redis_server.url(3),
        "DUSTPATROL_QUEUE__LEASE_S": "3",
        "DUSTPATROL_QUEUE__SWEEP_S": "0.5",
        "DUSTPATROL_LOG__FORMAT": "json",
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
        "DUSTPATROL_SERVER__SECRET_KEY": uuid.uuid4().hex,
        "DUSTPATROL_SERVER__ALLOW_PRIVATE_WEBHOOKS": "true",
        "DUSTPATROL_NOTICES__REQUIRE_CONFIRMATION": "false",
    }
    processes = Processes(environment, tmp_path)
    database = make_engine(postgres_database)
    receiver = Receiver()
    killed: dict[str, Any] = {}

    def kill_a_worker_mid_detection() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with database.connect() as connection:
                running = connection.execute(
                    select(Job.id, Job.worker).where(
                        Job.kind == "frame_detect", Job.state == "running"
                    )
                ).first()
            if running is not None:
                pid = int(str(running.worker).rsplit(":", 1)[1])
                name = next(n for n, p in processes.running.items() if p.pid == pid)
                os.kill(pid, signal.SIGKILL)
                processes.running[name].wait()
                killed.update(job=running.id, worker=name)
                processes.start(name, "worker")  # back after the crash, as systemd would
                return
            time.sleep(0.01)
        raise AssertionError("no detection job was seen running")

    try:
        base = processes.start_api(port, "--workers", "2")
        for name in ("worker-1", "worker-2"):
            processes.start(name, "worker")
        with httpx.Client(base_url=base, timeout=60) as client:
            got = patrol(client, world, frames, receiver, kill_a_worker_mid_detection)
    finally:
        receiver.close()
        processes.stop_all()
    logs = {name: processes.log(name) for name in ("api", "worker-1", "worker-2")}
    assert got == expected, logs
    assert got["deliveries"] == [1] * len(got["notices"])  # each notice's message once
    with database.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == killed["job"])).one()
        failed = connection.execute(select(Job.id).where(Job.state == "failed")).all()
    database.dispose()
    assert job.state == "done" and job.attempts == 2, job
    assert "attempt 1 was lost with its worker" in job.history, job.history
    assert job.history.strip().endswith(": done"), job.history
    assert failed == []
    records = [
        json.loads(line)
        for name in ("worker-1", "worker-2")
        for line in logs[name].splitlines()
        if line.startswith("{")
    ]
    taken_over = [
        r for r in records if r.get("job_id") == killed["job"] and "taken over" in r["message"]
    ]
    assert taken_over, "no JSON log line of the take-over with its job id"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_service_killed_in_the_middle_of_a_webhook_delivery_delivers_it_once_more_with_the_same_id(  # noqa: E501
    tmp_path: Path,
) -> None:
    """The embedded default: the service's own process delivers. SIGKILL while a bureau's
    endpoint is still answering; after the restart the message goes again (at least once)
    under the same delivery id, so the receiver can drop the duplicate; no second message."""
    from shapely.geometry import box

    from api.models.outbox import DeliveryAttempt, OutboxMessage
    from tests.api.conftest import World
    from tests.api.test_notices_api import findings_for
    from tests.api.test_sites_api import registry_file

    seen: list[str] = []
    first_arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["X-Dustpatrol-Delivery"])
            if len(seen) == 1:  # the first one hangs until the service is gone
                first_arrived.set()
                time.sleep(5)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    database = f"sqlite:///{tmp_path / 'dustpatrol.db'}"
    port = _free_port()
    environment = {
        **os.environ,
        "DUSTPATROL_DATABASE__URL": database,
        "DUSTPATROL_PATHS__DATA_DIR": str(tmp_path / "var"),
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
        "DUSTPATROL_SERVER__ALLOW_PRIVATE_WEBHOOKS": "true",
        "DUSTPATROL_SERVER__WEBHOOK_TIMEOUT_S": "1",
        "DUSTPATROL_NOTICES__REQUIRE_CONFIRMATION": "false",
    }
    processes = Processes(environment, tmp_path)
    try:
        base = processes.start_api(port)
        with httpx.Client(base_url=base, timeout=30) as client:
            world = World(client, Settings(), {})  # type: ignore[arg-type]
            admin = world.login("admin")
            made = client.post(
                "/bureaus",
                json={"name": "县住房和城乡建设局", "webhook_url": f"http://127.0.0.1:"
                      f"{receiver.server_address[1]}/hook", "webhook_secret": SECRET},
                headers=admin,
            )  # fmt: skip
            assert made.status_code == 201, made.text
            lon, lat = 116.0, 39.0
            path = registry_file(
                tmp_path,
                [("S1", "东关工地", "县住房和城乡建设局", box(lon, lat, lon + 0.002, lat + 0.002))],
            )
            with path.open("rb") as file:
                sent = client.post(
                    "/sites/import", files={"file": (path.name, file)}, headers=admin
                )
            assert sent.status_code == 200, sent.text
            flight = client.post("/flights", json={"name": "f"}, headers=admin).json()["id"]
            posted = client.post(
                f"/flights/{flight}/findings",
                json=findings_for(world, "S1", "exposed_soil", 10.0),
                headers=admin,
            )
            assert posted.status_code == 200 and len(posted.json()["notices_issued"]) == 1
            assert first_arrived.wait(30), processes.log("api")
            processes.running["api"].send_signal(signal.SIGKILL)
            processes.running["api"].wait()
            processes.start_api(port)
            deadline = time.monotonic() + 60
            while len(seen) < 2:
                assert time.monotonic() < deadline, processes.log("api")
                time.sleep(0.2)
            time.sleep(2.0)  # a third delivery would come now
            notices = client.get("/notices", headers=admin).json()
    finally:
        processes.stop_all()
        receiver.shutdown()
        receiver.server_close()
    assert len(notices) == 1 and len(seen) == 2 and seen[0] == seen[1], seen
    sessions = session_factory(make_engine(database))
    with sessions() as session:
        messages = session.scalars(select(OutboxMessage)).all()
        attempts = session.scalars(select(DeliveryAttempt)).all()
    assert [(m.state, m.attempts, str(m.id)) for m in messages] == [("delivered", 2, seen[0])]
    assert [(a.status_code, a.error) for a in attempts] == [(200, None)]  # the lost one: none


def test_the_one_machine_launcher_runs_api_processes_and_workers_and_stops_them_all(
    tmp_path: Path, redis_server: RedisServer, patrol_district: District
) -> None:
    """deploy/run-scaled.sh as a user runs it: 2 API processes and 2 workers; an uploaded
    frame's job is done by a worker; SIGTERM to the script stops every process it started."""
    port = _free_port()
    environment = {
        **os.environ,
        "DUSTPATROL_DATABASE__URL": f"sqlite:///{tmp_path / 'dustpatrol.db'}",
        "DUSTPATROL_PATHS__DATA_DIR": str(tmp_path / "var"),
        "DUSTPATROL_PATHS__FRAMES_DIR": str(tmp_path / "var" / "frames"),
        "DUSTPATROL_QUEUE__URL": redis_server.url(4),
        "DUSTPATROL_SERVER__PORT": str(port),
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": PASSWORD,
        "BIN": str(Path(sys.executable).parent),
        "LOGS": str(tmp_path / "logs"),
    }
    script = subprocess.Popen(
        ["bash", str(REPO / "deploy" / "run-scaled.sh"), "2", "2"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert script.stdout is not None
        banner = script.stdout.readline().decode()  # printed once everything is started
        assert "2 processes), 2 workers" in banner, banner
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            headers, sent = _upload_first_frame(client, patrol_district)
            job = sent["job_id"]
            deadline = time.monotonic() + 120
            while (state := client.get(f"/jobs/{job}", headers=headers).json())["state"] != "done":
                assert time.monotonic() < deadline and state["state"] != "failed", state
                time.sleep(0.2)
            assert state["worker"].split(":")[0].startswith("worker-")  # not the API
        children = subprocess.run(
            ["pgrep", "-s", str(script.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 1 + 2 + 2 + 1, children  # script, API + 2, 2 workers
        script.send_signal(signal.SIGTERM)
        script.wait(timeout=60)
        deadline = time.monotonic() + 60
        while subprocess.run(["pgrep", "-s", str(script.pid)], capture_output=True).stdout:
            assert time.monotonic() < deadline, "processes left running after SIGTERM"
            time.sleep(0.3)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()


def test_an_upload_while_the_broker_is_down_is_accepted_and_its_job_sent_later(
    tmp_path: Path, redis_server: RedisServer, patrol_district: District
) -> None:
    """Redis unreachable: the frame is stored and its job recorded (nothing accepted is lost);
    the message that could not be sent goes out with a later sweep."""
    down = Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'dustpatrol.db'}"},
            "paths": {"data_dir": str(tmp_path / "var")},
            "server": {"admin_password": PASSWORD},
            "queue": {"url": f"redis://127.0.0.1:{_free_port()}/0", "republish_s": 0.5},
        }
    )
    upgrade(down.database.url)
    ensure_admin(down)
    with TestClient(create_app(down, migrate=False)) as client:
        headers, sent = _upload_first_frame(client, patrol_district)
        job = client.get(f"/jobs/{sent['job_id']}", headers=headers).json()
        assert job["state"] == "pending"  # no worker could be told: it waits in the table
    up = down.model_copy(
        update={"queue": down.queue.model_copy(update={"url": redis_server.url(6)})}
    )
    time.sleep(0.6)  # longer than republish_s since the failed send
    plain = session_factory(make_engine(down.database.url))
    assert sweep(plain, Broker(up), up)["jobs"] == 1
    queued = _queued(redis.Redis.from_url(up.queue.url), "frames")
    assert [m["argsrepr"] for m in queued] == [f"({job['id']},)"]
