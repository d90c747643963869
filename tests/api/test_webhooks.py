"""Notices reach a bureau's webhook: signed, retried after a failure, logged, at least once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import box
from sqlalchemy import select

from api.db import make_engine, session_factory
from api.models.outbox import DeliveryAttempt, OutboxMessage
from dustpatrol.settings import Settings
from tests.api.conftest import World
from tests.api.test_notices_api import move, new_flight, post

SECRET = "a-shared-webhook-secret"


class Receiver:
    """A bureau's system on 127.0.0.1: fails the first delivery, accepts the rest."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.requests) == 1 else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dustpatrol"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The receivers here listen on 127.0.0.1: an intranet set-up that allows it."""
    return Settings.model_validate(
        {
            "database": {"url": database_url},
            "paths": {"data_dir": str(tmp_path / "var")},
            "server": {"allow_private_webhooks": True},
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_issued_and_acknowledged_notices_are_delivered_signed(
    world: World, receiver: Receiver, tmp_path: Path
) -> None:
    admin = world.login("admin")
    bureau = world.client.post(
        "/bureaus",
        json={"name": "县交通运输局", "webhook_url": receiver.url, "webhook_secret": SECRET},
        headers=admin,
    )
    assert bureau.status_code == 201, bureau.text
    world.client.post(
        "/users",
        json={
            "username": "traffic",
            "password": "correct-horse-battery",
            "role": "bureau",
            "bureau_id": bureau.json()["id"],
        },
        headers=admin,
    )
    frame = gpd.GeoDataFrame(
        {"site_id": ["T1"], "responsible_bureau": ["县交通运输局"]},
        geometry=[box(115.45, 36.48, 115.451, 36.481)],
        crs=4326,
    )
    path = tmp_path / "t.geojson"
    pyogrio.write_dataframe(frame, path, driver="GeoJSON")
    with path.open("rb") as handle:
        world.client.post("/sites/import", files={"file": ("t.geojson", handle)}, headers=admin)
    from tests.api.test_notices_api import findings_for

    flight = new_flight(world)
    post(world, flight, findings_for(world, "T1", "road_dust", 6.0))
    analyst = world.login("analyst")
    finding = world.client.get("/findings", params={"site": "T1"}, headers=analyst).json()[0]
    number = world.client.post(f"/findings/{finding['id']}/confirm", headers=analyst).json()[
        "notice"
    ]
    move(world, "traffic", number, "acknowledged")

    sessions = session_factory(make_engine(world.settings.database.url))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        with sessions() as session:
            states = [
                m.state for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            ]
        if states == ["delivered", "delivered"]:
            break
        time.sleep(0.5)
    assert states == ["delivered", "delivered"], states

    events = [json.loads(body)["event"] for _, body in receiver.requests]
    assert events.count("notice.issued") == 2  # failed once, retried: at least once
    assert events.count("notice.acknowledged") == 1
    for headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Dustpatrol-Signature"] == expected
    issued = [
        json.loads(body)
        for _, body in receiver.requests
        if json.loads(body)["event"] == "notice.issued"
    ]
    assert issued[0]["delivery"] == issued[1]["delivery"]  # the receiver can drop the duplicate
    assert issued[0]["notice"] == number and issued[0]["site"] == "T1"
    with sessions() as session:
        log = [
            (a.status_code, a.error)
            for a in session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))
        ]
    assert log[0] == (500, "HTTP 500") and (200, None) in log


class SlowReceiver:
    """A bureau endpoint that hangs until released (or 30 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Event()
        slow = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                slow.arrived.set()
                slow.release.wait(30)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_hanging_webhook_holds_up_neither_other_bureaus_nor_frame_analysis(
    world: World, receiver: Receiver
) -> None:
    """Before, deliveries ran one after another on the job worker's thread: a bureau endpoint
    that hung held up every other bureau's notices and every frame's job."""
    from api.services.webhooks import announce
    from tests.api.test_evidence_api import frame_jpeg
    from tests.api.test_flights_api import upload, wait_for_job

    slow = SlowReceiver()
    try:
        admin = world.login("admin")
        ids = {}
        for name, url in (("县慢局", slow.url), ("县快局", receiver.url)):
            created = world.client.post(
                "/bureaus",
                json={"name": name, "webhook_url": url, "webhook_secret": SECRET},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        sessions = session_factory(make_engine(world.settings.database.url))
        with sessions() as session:
            announce(session, ids["县慢局"], "notice.issued", {"notice": "GX-SLOW"})
            for n in range(3):  # the first fails (the receiver's way), then delivered
                announce(session, ids["县快局"], "notice.issued", {"notice": f"GX-FAST-{n}"})
            session.commit()
            slow_message = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
            assert slow_message is not None
        assert slow.arrived.wait(30), "the slow endpoint was never called"
        flight = new_flight(world)
        job = upload(world, flight, frame_jpeg()).json()["job_id"]
        wait_for_job(world, job)  # finished (a frame without EXIF fails at once: still done with)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(receiver.requests) < 4:
            time.sleep(0.2)
        assert len(receiver.requests) == 4, receiver.requests
        with sessions() as session:
            slow_attempts = session.scalars(
                select(DeliveryAttempt).where(DeliveryAttempt.message_id == slow_message.id)
            ).all()
        assert not slow.release.is_set() and slow_attempts == []  # all this while it hung
        delivered = [json.loads(body)["notice"] for _, body in receiver.requests[1:]]
        assert delivered == ["GX-FAST-0", "GX-FAST-1", "GX-FAST-2"]  # in order
        slow.release.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sessions() as session:
                now = session.get(OutboxMessage, slow_message.id)
                if now is not None and now.state == "delivered":
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the slow endpoint's message was not delivered once released")
    finally:
        slow.close()


def test_an_endpoint_that_keeps_failing_is_paused_then_tried_again() -> None:
    from api.services.webhooks import WebhookDispatcher

    dispatcher = WebhookDispatcher(
        None,  # type: ignore[arg-type]
        Settings(),
        breaker_failures=3,
        breaker_pause_s=0.2,
    )
    url = "https://bureau.example/hook"
    for _ in range(2):
        dispatcher._outcome(url, ok=False)
    assert not dispatcher._paused(url)
    dispatcher._outcome(url, ok=False)
    assert dispatcher._paused(url)  # three in a row: left alone for a while
    time.sleep(0.25)
    assert not dispatcher._paused(url)  # then tried again (half-open)
    dispatcher._outcome(url, ok=False)
    assert dispatcher._paused(url)  # one more failure pauses it again, for longer
    assert dispatcher._breakers[url].opened == 2
    dispatcher._outcome(url, ok=True)
    assert not dispatcher._paused(url) and url not in dispatcher._breakers
