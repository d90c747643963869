"""Regressions of the independent probe (hardening issue): each test failed on the code before
its fix. Races are reproduced deterministically where possible (the check of one request
runs before the insert of another), and with real parallel requests besides."""

from __future__ import annotations

import itertools
import json
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy.orm import Session

from api.db import make_engine, session_factory
from api.errors import ConflictError
from api.models.bureaus import BureauCreate
from api.models.users import Role, User, UserCreate
from api.routes.bureaus import add_bureau
from api.routes.users import add_user
from api.services.notices import ingest
from tests.api.conftest import PASSWORD, World
from tests.api.test_notices_api import findings_for, new_flight
from tests.api.test_sites_api import imported as imported


def _blind_check(session: Session, monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """Make ``session`` miss, once, a row another request committed a moment ago: its first
    existence check whose SQL mentions ``marker`` sees nothing."""
    real = session.scalar
    fooled = [False]

    def scalar(statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not fooled[0] and marker in str(statement):
            fooled[0] = True
            return None
        return real(statement, *args, **kwargs)

    monkeypatch.setattr(session, "scalar", scalar)


def test_a_user_or_bureau_created_at_the_same_moment_is_a_conflict_not_a_500(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(make_engine(world.settings.database.url))
    body = UserCreate(username="twin", password=PASSWORD, role=Role.ANALYST)
    with sessions() as session:
        add_user(session, body)  # the request that won
    with sessions() as session:
        _blind_check(session, monkeypatch, "users.username")
        with pytest.raises(ConflictError, match="exists already"):
            add_user(session, body)
    with sessions() as session:
        add_bureau(session, world.settings, BureauCreate(name="县交通运输局"))
    with sessions() as session:
        _blind_check(session, monkeypatch, "bureaus.name")
        with pytest.raises(ConflictError, match="exists already"):
            add_bureau(session, world.settings, BureauCreate(name="县交通运输局"))


def test_parallel_identical_user_creations_give_one_201_and_409s(world: World) -> None:
    headers = world.login("admin")
    body = {"username": "racer", "password": PASSWORD, "role": "analyst"}

    def create(_: int) -> int:
        return int(world.client.post("/users", json=body, headers=headers).status_code)

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(create, range(10)))
    assert sorted(set(statuses)) in ([201, 409], [201]) and statuses.count(201) == 1


def test_the_same_findings_posted_at_the_same_moment_are_stored_once(
    imported: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    flight = new_flight(imported)
    collection = findings_for(imported, "S1", "exposed_soil", 10.0)
    sessions = session_factory(make_engine(imported.settings.database.url))
    with sessions() as session:
        assert ingest(session, imported.settings, flight, collection).created == 1
    with sessions() as session:
        _blind_check(session, monkeypatch, "findings.fingerprint")
        again = ingest(session, imported.settings, flight, collection)
    assert again.created == 0 and again.unchanged == 1


def test_a_token_whose_subject_is_not_a_user_id_is_a_401(world: World) -> None:
    now = datetime.now(UTC)
    for subject in ("admin", "1.5", "-1", "9" * 40):
        token = jwt.encode(
            {"sub": subject, "exp": now + timedelta(minutes=5)},
            world.client.app.state.secret,  # type: ignore[attr-defined]
            algorithm="HS256",
        )
        response = world.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (subject, response.text)
        assert "not valid" in response.json()["detail"]


def test_an_unknown_user_costs_the_same_password_check_as_a_known_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No username oracle by timing: an unknown name is refused after the same Argon2 work
    as a wrong password (before, it answered at once: 4 ms against 322 ms)."""
    from api import security

    checks: list[str] = []

    class Counting:
        def __init__(self, hasher: Any) -> None:
            self.hasher = hasher

        def verify(self, password_hash: str, password: str) -> bool:
            checks.append(password_hash)
            return bool(self.hasher.verify(password_hash, password))

    monkeypatch.setattr(security, "_hasher", Counting(security._hasher))
    for username in ("admin", "nobody-here"):
        response = world.client.post(
            "/auth/token", data={"username": username, "password": "wrong-password-123"}
        )
        assert response.status_code == 401
        assert response.json()["detail"] == "wrong username or password"
    assert len(checks) == 2 and all(h.startswith("$argon2") for h in checks)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header claims ``width`` x ``height`` pixels."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 110, 90)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_jpeg_claiming(30000, 30000), "than any survey camera"),  # a bomb
        (_jpeg_claiming(12000, 12000), "than any survey camera"),  # 144 MP, 631 B
    ],
    ids=["30000x30000", "12000x12000"],
)
def test_frames_claiming_absurd_sizes_are_refused_with_a_4xx(
    world: World, data: bytes, why: str
) -> None:
    headers = world.login("analyst")
    flight = world.client.post("/flights", json={"name": "bombs"}, headers=headers).json()["id"]
    response = world.client.post(
        f"/flights/{flight}/frames",
        files={"file": ("bomb.jpg", data, "image/jpeg")},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert why in response.json()["detail"]


def test_a_truncated_frame_is_refused_at_upload(world: World) -> None:
    from sim.world import generate_district
    from tests.api.test_flights_api import sim_jpeg

    data, _ = sim_jpeg(generate_district(3, n_sites=10, extent_m=2000.0))
    headers = world.login("analyst")
    flight = world.client.post("/flights", json={"name": "cut"}, headers=headers).json()["id"]
    response = world.client.post(
        f"/flights/{flight}/frames",
        files={"file": ("DJI_0001.JPG", data[: len(data) * 6 // 10], "image/jpeg")},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert "truncated" in response.json()["detail"]
    assert world.client.get(f"/flights/{flight}/frames", headers=headers).json() == []


def _broken(collection: dict[str, Any], change: Any) -> dict[str, Any]:
    import copy

    broken = copy.deepcopy(collection)
    change(broken["features"][0])
    return broken


def _set(path: tuple[str, ...], value: Any) -> Any:
    def change(feature: dict[str, Any]) -> None:
        target = feature
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def test_malformed_findings_are_422_problems_naming_what_is_wrong(imported: World) -> None:
    flight = new_flight(imported)
    good = findings_for(imported, "S1", "exposed_soil", 10.0)
    ring = good["features"][0]["geometry"]["coordinates"][0]
    (x0, y0), (x1, y1) = ring[0], ring[2]
    bow_tie = {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]],
    }
    infinite = {"type": "Polygon", "coordinates": [[[x0, y0], [1e400, y0], [x1, y1], [x0, y0]]]}
    cases = {
        "properties must be an object": _set(("properties",), ["exposed_soil"]),
        "properties must be an object ": _set(("properties",), "exposed_soil"),
        "class must be one of": _set(("properties", "class"), ["exposed_soil"]),
        "class must be one of ": _set(("properties", "class"), {"name": "exposed_soil"}),
        "site_id must be a string": _set(("properties", "site_id"), ["S1"]),
        "site_id must be a string ": _set(("properties", "site_id"), {"id": "S1"}),
        "area_m2 must be a non-negative number": _set(("properties", "area_m2"), True),
        "not valid": _set(("geometry",), bow_tie),
        "not finite": _set(("geometry",), infinite),
    }
    headers = imported.login("analyst")
    for expected, change in cases.items():
        body = json.dumps(_broken(good, change))  # Infinity where the probe sent it
        response = imported.client.post(
            f"/flights/{flight}/findings",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (expected, response.text)
        assert expected.strip() in response.json()["detail"], (expected, response.text)
    # nothing of the refused posts was stored
    assert imported.client.get("/findings", params={"flight": flight}, headers=headers).json() == []


def _import(world: World, name: str, data: bytes, **params: str) -> Any:
    return world.client.post(
        "/sites/import",
        params=params,
        files={"file": (name, data, "application/octet-stream")},
        headers=world.login("admin"),
    )


SQUARE = "POLYGON ((115.45 36.48, 115.451 36.48, 115.451 36.481, 115.45 36.481, 115.45 36.48))"


def test_site_imports_that_crashed_are_4xx_or_keep_the_good_rows(world: World) -> None:
    csv_text = (
        "site_id,name,wkt\n"
        f'S1,good site,"{SQUARE}"\n'
        f'S2,comma, in name,"{SQUARE}"\n'  # one value more than the header
    )
    response = _import(world, "sites.csv", csv_text.encode(), crs="EPSG:4326")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 1
    assert any("more value" in r["problem"] for r in report["rejected"])
    response = _import(world, "sites.csv", csv_text.encode(), encoding="klingon-8", crs="EPSG:4326")
    assert response.status_code == 422 and "unknown text encoding" in response.json()["detail"]
    response = _import(world, "sites\x00.geojson", b"{}")
    assert response.status_code == 422, response.text
    response = _import(world, "registry.geojson", b'{"type": "FeatureCollection", "features": [')
    assert response.status_code == 422
    assert (
        "/tmp" not in response.json()["detail"] and "registry.geojson" in response.json()["detail"]
    )


# --- Item 1: notice transitions are compare-and-set; one open notice per site and class ---


def _events_chain(world: World, number: str) -> list[tuple[str | None, str]]:
    events = world.client.get(f"/notices/{number}", headers=world.login("admin")).json()["events"]
    return [(e["from_state"], e["to_state"]) for e in events]


def _assert_audit_consistent(world: World, number: str) -> None:
    """Every event starts where the one before ended, and the last names the notice's state."""
    chain = _events_chain(world, number)
    for (_, before), (after, _) in itertools.pairwise(chain):
        assert after == before, chain
    state = world.client.get(f"/notices/{number}", headers=world.login("admin")).json()["state"]
    assert chain[-1][1] == state


def test_a_transition_made_between_another_requests_check_and_write_wins_alone(
    imported: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reject lands after the acknowledge was checked against `issued`: the acknowledge
    must not overwrite it (it did: the rejected notice ended acknowledged)."""
    import api.services.notices as notices
    from tests.api.test_notices_api import issued_notice

    _with_webhook(imported)
    number = issued_notice(imported)
    admin = imported.login("admin")
    real_refusal = notices._refusal
    interleaved = [False]

    def refusal_then_reject(*args: Any) -> str:
        if not interleaved[0]:
            interleaved[0] = True
            other = imported.client.post(
                f"/notices/{number}/transitions", json={"to": "rejected"}, headers=admin
            )
            assert other.status_code == 200, other.text
        return real_refusal(*args)

    monkeypatch.setattr(notices, "_refusal", refusal_then_reject)
    late = imported.client.post(
        f"/notices/{number}/transitions",
        json={"to": "acknowledged"},
        headers=imported.login("housing"),
    )
    assert late.status_code == 409, late.text
    assert "changed while this request was checked" in late.json()["detail"]
    assert "rejected" in late.json()["detail"]
    monkeypatch.setattr(notices, "_refusal", real_refusal)
    assert _events_chain(imported, number) == [(None, "issued"), ("issued", "rejected")]
    _assert_audit_consistent(imported, number)
    outbox = _outbox_events(imported, number)
    assert outbox == ["notice.issued", "notice.rejected"]


def _with_webhook(world: World) -> None:
    """Give the housing bureau a webhook, so notice changes queue messages for it."""
    from api.models.bureaus import Bureau

    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        bureau = session.get(Bureau, world.bureau_ids["县住房和城乡建设局"])
        assert bureau is not None
        bureau.webhook_url = "https://hooks.invalid/dustpatrol"
        bureau.webhook_secret = "a-shared-webhook-secret"
        session.commit()


def _outbox_events(world: World, number: str) -> list[str]:
    from sqlalchemy import select

    from api.models.outbox import OutboxMessage

    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        return [
            m.event
            for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            if m.payload.get("notice") == number
        ]


def test_parallel_reject_and_acknowledge_one_wins_and_the_audit_agrees(imported: World) -> None:
    from tests.api.test_notices_api import issued_notice

    _with_webhook(imported)
    admin, housing = imported.login("admin"), imported.login("housing")
    for trial in range(6):
        number = issued_notice(imported, site="S1" if trial % 2 == 0 else "S2")

        def send(move: tuple[str, dict[str, str]], number: str = number) -> int:
            to, headers = move
            response = imported.client.post(
                f"/notices/{number}/transitions", json={"to": to}, headers=headers
            )
            return int(response.status_code)

        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(send, [("rejected", admin), ("acknowledged", housing)]))
        state = imported.client.get(f"/notices/{number}", headers=admin).json()["state"]
        if statuses == [200, 200]:  # acknowledged first, then rejected: both legal in turn
            assert state == "rejected"
        else:
            assert sorted(statuses) == [200, 409], statuses
            assert state == ("rejected" if statuses[0] == 200 else "acknowledged")
        _assert_audit_consistent(imported, number)
        assert _outbox_events(imported, number).count("notice.rejected") == (
            1 if state == "rejected" else 0
        )


def test_two_notices_issued_at_the_same_moment_for_one_site_and_class_are_one(
    imported: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second issue's look-up of the open notice misses the first (committed a moment
    ago): the database refuses the second open notice and the finding joins the first."""
    from api.models.notices import Finding
    from api.services.notices import review
    from tests.api.test_notices_api import findings_for, new_flight

    flight = new_flight(imported)
    first = findings_for(imported, "S1", "exposed_soil", 10.0)
    second = findings_for(imported, "S1", "exposed_soil", 9.0, shift=30.0)
    sessions = session_factory(make_engine(imported.settings.database.url))
    with sessions() as session:
        ingest(session, imported.settings, flight, first)
        ingest(session, imported.settings, flight, second)
        ids = [f.id for f in session.query(Finding).order_by(Finding.id)]
        analyst = session.query(User).filter_by(username="analyst").one()
    with sessions() as session:
        one = review(session, imported.settings, ids[0], True, analyst)
    with sessions() as session:
        _blind_check(session, monkeypatch, "notices.state IN")
        two = review(session, imported.settings, ids[1], True, analyst)
    assert one.notice is not None and two.notice == one.notice
    listed = imported.client.get(
        "/notices", params={"site": "S1"}, headers=imported.login("admin")
    ).json()
    assert [n["number"] for n in listed] == [one.notice]


def test_a_finding_decided_between_another_reviews_read_and_write_is_a_409(
    imported: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.services.notices as notices
    from tests.api.test_notices_api import findings_for, new_flight, post

    flight = new_flight(imported)
    post(imported, flight, findings_for(imported, "S3", "road_dust", 6.0))
    analyst = imported.login("analyst")
    finding = imported.client.get("/findings", params={"site": "S3"}, headers=analyst).json()[0]
    real_get = notices.get_finding
    interleaved = [False]

    def get_then_reject(*args: Any) -> Any:
        found = real_get(*args)
        if not interleaved[0]:
            interleaved[0] = True
            other = imported.client.post(f"/findings/{finding['id']}/reject", headers=analyst)
            assert other.status_code == 200, other.text
        return found

    monkeypatch.setattr(notices, "get_finding", get_then_reject)
    late = imported.client.post(f"/findings/{finding['id']}/confirm", headers=analyst)
    assert late.status_code == 409 and "already rejected" in late.json()["detail"], late.text
    monkeypatch.setattr(notices, "get_finding", real_get)
    after = imported.client.get(f"/findings/{finding['id']}", headers=analyst).json()
    assert after["review"] == "rejected" and after["notice"] is None


# --- Item 16: body size limits, refused before the body is read ---


def test_an_oversized_json_body_is_a_413_before_it_is_read(imported: World) -> None:
    from tests.api.test_notices_api import new_flight

    flight = new_flight(imported)
    headers = {**imported.login("analyst"), "Content-Type": "application/json"}
    big = b'{"type": "FeatureCollection", "features": [' + b" " * (17 * 2**20) + b"]}"
    response = imported.client.post(f"/flights/{flight}/findings", content=big, headers=headers)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "16 MiB" in response.json()["detail"]
    plan = imported.client.post(
        "/flights",
        content=b'{"name": "f", "plan": "' + b"x" * (17 * 2**20) + b'"}',
        headers=headers,
    )
    assert plan.status_code == 413
    chunks = (b" " * 2**20 for _ in range(20))  # streamed: no Content-Length
    streamed = imported.client.post(f"/flights/{flight}/findings", content=chunks, headers=headers)
    assert streamed.status_code == 413, streamed.text


def test_the_limit_stops_reading_a_streamed_body_once_it_is_passed() -> None:
    import asyncio

    from api.limits import BodyLimit

    read: list[int] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": len(read) < 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def declared() -> None:
        scope = {"type": "http", "path": "/flights", "headers": [(b"content-length", b"999999")]}
        await BodyLimit(app, default_bytes=4096)(scope, receive, send)

    asyncio.run(declared())
    assert read == [] and sent[0]["status"] == 413  # refused on the header alone

    from starlette.exceptions import HTTPException

    scope = {"type": "http", "path": "/flights", "headers": []}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(BodyLimit(app, default_bytes=4096)(scope, receive, send))
    assert refused.value.status_code == 413 and len(read) == 5  # not the 1000 chunks


# --- Item 17: webhooks may not reach into the server's own network ---


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://192.168.1.20/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_webhooks_into_private_networks_are_refused(world: World, url: str) -> None:
    response = world.client.post(
        "/bureaus",
        json={"name": "县交通运输局", "webhook_url": url, "webhook_secret": "s" * 20},
        headers=world.login("admin"),
    )
    assert response.status_code == 422, response.text
    assert "allow_private_webhooks" in response.json()["detail"]


def test_a_webhook_that_resolves_into_the_private_network_later_is_not_posted_to(
    world: World,
) -> None:
    """Checked again at delivery: a name that resolved to a public address when the bureau was
    registered may point at loopback by then (DNS rebinding)."""
    from sqlalchemy import select

    from api.models.outbox import DeliveryAttempt, OutboxMessage
    from api.services.webhooks import WebhookDispatcher, announce

    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        from api.models.bureaus import Bureau

        bureau = Bureau(name="县交通运输局", webhook_url="http://localhost:9/hook")
        session.add(bureau)
        session.flush()
        announce(session, bureau.id, "notice.issued", {"notice": "GX-1"})
        session.commit()
    dispatcher = WebhookDispatcher(sessions, world.settings)
    dispatcher.serve(bureau.id)
    with sessions() as session:
        attempt = session.scalars(select(DeliveryAttempt)).one()
        message = session.scalars(select(OutboxMessage)).one()
    assert attempt.status_code is None and attempt.error is not None
    assert attempt.error.startswith("refused:") and message.state == "pending"


def test_the_findings_flight_filter_states_its_range(world: World) -> None:
    """Schemathesis sent flight=10**22 (valid by a schema without a bound) and got the
    database's overflow refusal: the schema now bounds it, and the refusal names the field."""
    schema = world.client.get("/openapi.json").json()
    (flight,) = [
        p for p in schema["paths"]["/findings"]["get"]["parameters"] if p["name"] == "flight"
    ]
    bounds = flight["schema"]["anyOf"][0]
    assert (bounds["minimum"], bounds["maximum"]) == (1, 2**63 - 1)
    answer = world.client.get(
        "/findings", params={"flight": 10**22}, headers=world.login("analyst")
    )
    assert answer.status_code == 422 and "flight" in answer.text


def test_every_response_has_a_request_id_and_a_callers_plain_one_is_kept(world: World) -> None:
    fresh = world.client.get("/health/live")
    assert len(fresh.headers["x-request-id"]) == 32
    other = world.client.get("/health/live")
    assert other.headers["x-request-id"] != fresh.headers["x-request-id"]
    given = world.client.get("/health/live", headers={"X-Request-ID": "proxy-7f3a.1"})
    assert given.headers["x-request-id"] == "proxy-7f3a.1"
    forged = world.client.get("/health/live", headers={"X-Request-ID": "a\\nb" + "x" * 80})
    assert forged.headers["x-request-id"] not in ("a\\nb" + "x" * 80,)
    assert len(forged.headers["x-request-id"]) == 32  # replaced, not echoed
