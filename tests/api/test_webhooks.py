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
