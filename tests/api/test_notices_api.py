"""Findings in, notices out: rules, one open notice per site and class, lifecycle, isolation."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from geo.matching import Observation, findings_geojson, merge_observations
from tests.api.conftest import World
from tests.api.test_sites_api import imported as imported

E0, N0 = 0.0, 0.0


def findings_for(
    world: World,
    site_id: str,
    cls: str,
    area_side_m: float,
    confidence: float = 0.9,
    shift: float = 0.0,
) -> dict[str, Any]:
    """A findings collection as geo.matching writes it, placed inside ``site_id``."""
    from pyproj import CRS
    from shapely.geometry import box

    site = world.client.get(f"/sites/{site_id}", headers=world.login("admin")).json()
    min_lon, min_lat, _, _ = site["bbox"]
    utm = CRS.from_epsg(32650)
    from geo.crs import WGS84, transformer

    e, n = transformer(WGS84, utm).transform(min_lon, min_lat)
    polygon = box(e + 5 + shift, n + 5, e + 5 + shift + area_side_m, n + 5 + area_side_m)
    observation = Observation("DJI_0001", cls, polygon, confidence, 1.5, (10, 10, 90, 90), site_id)
    return findings_geojson(merge_observations([observation], utm))


def post(world: World, flight: int, collection: dict[str, Any]) -> Any:
    return world.client.post(
        f"/flights/{flight}/findings", json=collection, headers=world.login("analyst")
    )


def new_flight(world: World) -> int:
    return int(
        world.client.post("/flights", json={"name": "f"}, headers=world.login("analyst")).json()[
            "id"
        ]
    )


def test_confirmed_findings_issue_one_notice_per_site_and_class(imported: World) -> None:
    flight = new_flight(imported)
    first = post(imported, flight, findings_for(imported, "S1", "exposed_soil", 10.0))
    assert (
        first.json()["created"] == 1 and first.json()["notices_issued"] == []
    )  # needs confirmation
    again = post(imported, flight, findings_for(imported, "S1", "exposed_soil", 10.0))
    assert again.json() == {"created": 0, "unchanged": 1, "unknown_sites": [], "notices_issued": []}
    post(imported, flight, findings_for(imported, "S1", "exposed_soil", 8.0, shift=30.0))
    analyst = imported.login("analyst")
    ids = [
        f["id"]
        for f in imported.client.get("/findings", params={"site": "S1"}, headers=analyst).json()
    ]
    numbers = {
        imported.client.post(f"/findings/{i}/confirm", headers=analyst).json()["notice"]
        for i in ids
    }
    assert len(numbers) == 1  # the second finding joins the open notice
    number = numbers.pop()
    assert number.startswith("GX-") and number.endswith("-000001")
    notice = imported.client.get(f"/notices/{number}", headers=analyst).json()
    assert notice["state"] == "issued" and notice["findings"] == ids
    assert "裸露土方" in notice["text_zh"] and "exposed soil" in notice["text_en"]
    assert notice["events"][0]["to_state"] == "issued"


def test_rules_skip_small_unsure_compliant_and_rejected(imported: World) -> None:
    flight = new_flight(imported)
    for collection in (
        findings_for(imported, "S2", "exposed_soil", 3.0),  # 9 m² < 20 m²
        findings_for(imported, "S2", "road_dust", 5.0, confidence=0.2),  # unsure
        findings_for(imported, "S2", "covered_soil", 20.0),  # compliant
    ):
        post(imported, flight, collection)
    analyst = imported.login("analyst")
    for finding in imported.client.get("/findings", params={"site": "S2"}, headers=analyst).json():
        assert (
            imported.client.post(f"/findings/{finding['id']}/confirm", headers=analyst).json()[
                "notice"
            ]
            is None
        )
    post(imported, flight, findings_for(imported, "S2", "exposed_soil", 10.0, shift=40.0))
    big = [
        f
        for f in imported.client.get("/findings", params={"site": "S2"}, headers=analyst).json()
        if f["review"] == "pending"
    ]
    rejected = imported.client.post(f"/findings/{big[0]['id']}/reject", headers=analyst).json()
    assert rejected["review"] == "rejected" and rejected["notice"] is None
    assert (
        imported.client.post(f"/findings/{big[0]['id']}/confirm", headers=analyst).status_code
        == 409
    )


def issued_notice(world: World, site: str = "S1") -> str:
    flight = new_flight(world)
    post(world, flight, findings_for(world, site, "road_dust", 6.0))
    analyst = world.login("analyst")
    finding = world.client.get("/findings", params={"site": site}, headers=analyst).json()[-1]
    return str(
        world.client.post(f"/findings/{finding['id']}/confirm", headers=analyst).json()["notice"]
    )


def move(world: World, who: str, number: str, to: str, note: str | None = None) -> Any:
    """Transition ``number``; a report of rectification comes with a photo, as required."""
    headers = world.login(who)
    attachments = []
    if to == "rectified":
        import io

        from tests.api.test_evidence_api import frame_jpeg

        uploaded = world.client.post(
            f"/notices/{number}/photos",
            files={"file": ("after.jpg", io.BytesIO(frame_jpeg()), "image/jpeg")},
            headers=headers,
        )
        if uploaded.status_code == 201:
            attachments = [uploaded.json()["sha256"]]
    return world.client.post(
        f"/notices/{number}/transitions",
        json={"to": to, "note": note, "attachments": attachments},
        headers=headers,
    )


def test_the_lifecycle_is_followed_and_audited(imported: World) -> None:
    number = issued_notice(imported)
    assert move(imported, "housing", number, "acknowledged").json()["state"] == "acknowledged"
    assert (
        move(imported, "housing", number, "rectified", "covered with green net").json()["state"]
        == "rectified"
    )
    assert move(imported, "analyst", number, "verified").json()["state"] == "verified"
    notice = move(imported, "analyst", number, "closed").json()
    assert notice["state"] == "closed"
    trail = [(e["from_state"], e["to_state"]) for e in notice["events"]]
    assert trail == [
        (None, "issued"),
        ("issued", "acknowledged"),
        ("acknowledged", "rectified"),
        ("rectified", "verified"),
        ("verified", "closed"),
    ]
    assert notice["events"][2]["note"] == "covered with green net"


@pytest.mark.parametrize(
    ("who", "to", "status"),
    [
        ("housing", "closed", 409),
        ("housing", "verified", 409),
        ("analyst", "rectified", 403),
        ("urban", "acknowledged", 404),
    ],
)
def test_illegal_or_unauthorised_transitions(
    imported: World, who: str, to: str, status: int
) -> None:
    number = issued_notice(imported)
    response = move(imported, who, number, to)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


def test_a_bureau_cannot_verify_its_own_rectification(imported: World) -> None:
    number = issued_notice(imported)
    move(imported, "housing", number, "rectified")
    assert move(imported, "housing", number, "verified").status_code == 403


def test_closed_notice_does_not_take_new_findings(imported: World) -> None:
    first = issued_notice(imported)
    move(imported, "admin", first, "rejected", "false positive: shadow")
    second = issued_notice(imported)
    assert second != first


def test_bureaus_see_only_their_own_notices_and_findings(imported: World) -> None:
    housing_notice = issued_notice(imported, "S1")
    urban_notice = issued_notice(imported, "S3")
    housing = [
        n["number"]
        for n in imported.client.get("/notices", headers=imported.login("housing")).json()
    ]
    urban = [
        n["number"] for n in imported.client.get("/notices", headers=imported.login("urban")).json()
    ]
    assert housing == [housing_notice] and urban == [urban_notice]
    assert (
        imported.client.get(
            f"/notices/{urban_notice}", headers=imported.login("housing")
        ).status_code
        == 404
    )
    sites = {
        f["site"] for f in imported.client.get("/findings", headers=imported.login("urban")).json()
    }
    assert sites == {"S3"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "Feature"}, "FeatureCollection"),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"class": "smoke"}, "geometry": None}
                ],
            },
            "class must be one of",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {
                            "class": "road_dust",
                            "area_m2": -1,
                            "confidence": 0.5,
                            "uncertainty_m": 1,
                        },
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [[115.45, 36.48], [115.46, 36.48], [115.46, 36.49], [115.45, 36.48]]
                            ],
                        },
                    }
                ],
            },
            "area_m2",
        ),
    ],
)
def test_bad_findings_are_problems_naming_the_feature(
    imported: World, body: dict[str, Any], message: str, tmp_path: Path
) -> None:
    response = post(imported, new_flight(imported), body)
    assert response.status_code == 422 and message in response.json()["detail"]


def _session(world: World) -> Any:
    from api.db import make_engine, session_factory

    return session_factory(make_engine(world.settings.database.url))()


def test_deadlines_make_notices_overdue_then_escalated(imported: World) -> None:
    from api.models.notices import Notice
    from api.services.notices import mark_overdue

    number = issued_notice(imported)  # road dust: 4 h deadline
    with _session(imported) as session:
        notice = session.query(Notice).filter_by(number=number).one()
        deadline = (
            notice.deadline if notice.deadline.tzinfo else notice.deadline.replace(tzinfo=UTC)
        )
        assert mark_overdue(session, imported.settings, deadline - timedelta(minutes=1)) == []
        assert mark_overdue(session, imported.settings, deadline + timedelta(hours=1)) == [number]
        assert mark_overdue(session, imported.settings, deadline + timedelta(hours=26)) == [number]
    notice_body = imported.client.get(
        f"/notices/{number}", headers=imported.login("analyst")
    ).json()
    assert notice_body["state"] == "escalated"
    assert [e["to_state"] for e in notice_body["events"]][-2:] == ["overdue", "escalated"]
    # An escalated notice can still be rectified by its bureau.
    assert move(imported, "housing", number, "rectified").json()["state"] == "rectified"


def _flight_seeing(world: World, site_id: str) -> int:
    """A flight with one processed frame whose footprint covers ``site_id``."""
    from shapely.geometry import box, mapping

    from api.models.flights import Frame

    flight = new_flight(world)
    site = world.client.get(f"/sites/{site_id}", headers=world.login("admin")).json()
    min_lon, min_lat, max_lon, max_lat = site["bbox"]
    footprint = box(min_lon - 0.001, min_lat - 0.001, max_lon + 0.001, max_lat + 0.001)
    with _session(world) as session:
        session.add(
            Frame(
                flight_id=flight,
                sha256=f"{flight:064d}",
                filename="f.jpg",
                size_bytes=1,
                status="ready",
                footprint_geojson=json.dumps(mapping(footprint)),
            )
        )
        session.commit()
    return flight


def test_a_later_flight_that_sees_the_site_clean_verifies_the_notice(imported: World) -> None:
    number = issued_notice(imported)
    move(imported, "housing", number, "rectified", "swept and watered")
    flight = _flight_seeing(imported, "S1")
    response = post(imported, flight, {"type": "FeatureCollection", "features": []})
    assert response.status_code == 200, response.text
    notice = imported.client.get(f"/notices/{number}", headers=imported.login("analyst")).json()
    assert notice["state"] == "verified"
    assert "no road_dust" in notice["events"][-1]["note"]


def test_a_later_flight_that_finds_the_problem_again_reopens_it(imported: World) -> None:
    number = issued_notice(imported)
    move(imported, "housing", number, "rectified")
    flight = _flight_seeing(imported, "S1")
    post(imported, flight, findings_for(imported, "S1", "road_dust", 7.0, shift=50.0))
    notice = imported.client.get(f"/notices/{number}", headers=imported.login("analyst")).json()
    assert notice["state"] == "acknowledged"
    assert "found road_dust again" in notice["events"][-1]["note"]
    assert len(notice["findings"]) == 2


def test_what_would_issue_no_notice_does_not_send_a_rectified_one_back(imported: World) -> None:
    """Verification judges a later flight's findings by the rules that issue notices: a
    speck below the minimum area (road dust: 10 m²) or a patch below the minimum confidence
    (0.4) would not have issued this notice, so it does not reopen it either."""
    number = issued_notice(imported)
    move(imported, "housing", number, "rectified")
    flight = _flight_seeing(imported, "S1")
    speck = findings_for(imported, "S1", "road_dust", 2.0, shift=50.0)  # 4 m²
    unsure = findings_for(imported, "S1", "road_dust", 7.0, confidence=0.3, shift=70.0)
    both = {"type": "FeatureCollection", "features": speck["features"] + unsure["features"]}
    response = post(imported, flight, both)
    assert response.status_code == 200 and response.json()["created"] == 2, response.text
    notice = imported.client.get(f"/notices/{number}", headers=imported.login("analyst")).json()
    assert notice["state"] == "verified", notice["events"][-1]
    assert "no road_dust" in notice["events"][-1]["note"]


def test_notices_are_listed_a_page_at_a_time_with_filters(imported: World) -> None:
    numbers = [issued_notice(imported, site) for site in ("S1", "S2", "S3")]
    move(imported, "housing", numbers[1], "rectified")
    move(imported, "analyst", numbers[1], "verified")
    analyst = imported.login("analyst")
    seen: list[str] = []
    url: str | None = "/notices?limit=2"
    pages = 0
    while url:
        response = imported.client.get(url, headers=analyst)
        assert response.status_code == 200, response.text
        seen += [n["number"] for n in response.json()]
        pages += 1
        link = response.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert seen == numbers and pages == 2
    first = imported.client.get("/notices", headers=analyst).json()[0]
    assert first["site"] == "S1" and first["site_name"] == "东关工地"
    assert first["bureau"] == "县住房和城乡建设局"
    open_ones = imported.client.get("/notices", params={"open": "true"}, headers=analyst).json()
    assert [n["number"] for n in open_ones] == [numbers[0], numbers[2]]
    housing = imported.client.get(
        "/notices", params={"open": "true"}, headers=imported.login("housing")
    ).json()
    assert [n["number"] for n in housing] == [numbers[0]]
    verified = imported.client.get("/notices", params={"state": "verified"}, headers=analyst).json()
    assert [n["number"] for n in verified] == [numbers[1]]
    bad = imported.client.get("/notices", params={"cursor": "garbage!"}, headers=analyst)
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    bad_state = imported.client.get("/notices", params={"state": "lost"}, headers=analyst)
    assert bad_state.status_code == 422 and "state" in str(bad_state.json())


def test_notice_numbers_continue_from_the_counter(imported: World) -> None:
    first = issued_notice(imported, "S1")
    second = issued_notice(imported, "S2")
    assert int(second.rsplit("-", 1)[1]) == int(first.rsplit("-", 1)[1]) + 1


def test_the_bureau_reports_rectification_with_photos(imported: World) -> None:
    import io as _io

    from tests.api.test_evidence_api import frame_jpeg

    number = issued_notice(imported)
    housing = imported.login("housing")

    def upload_photo(data: bytes, who: dict[str, str] = housing) -> Any:
        return imported.client.post(
            f"/notices/{number}/photos",
            files={"file": ("after.jpg", _io.BytesIO(data), "image/jpeg")},
            headers=who,
        )

    no_photo = imported.client.post(
        f"/notices/{number}/transitions", json={"to": "rectified"}, headers=housing
    )
    assert no_photo.status_code == 422 and "needs a photo" in no_photo.json()["detail"]
    first = upload_photo(frame_jpeg())
    assert first.status_code == 201, first.text
    sha = first.json()["sha256"]
    assert upload_photo(frame_jpeg()).json()["sha256"] == sha  # stored once
    refused = imported.client.post(
        f"/notices/{number}/transitions",
        json={"to": "rectified", "attachments": ["0" * 64]},
        headers=housing,
    )
    assert refused.status_code == 422 and "POST /notices/" in refused.json()["detail"]
    moved = imported.client.post(
        f"/notices/{number}/transitions",
        json={"to": "rectified", "note": "netted", "attachments": [sha]},
        headers=housing,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["events"][-1]["attachments"] == [sha]
    photo = imported.client.get(first.json()["url"], headers=imported.login("analyst"))
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert (
        imported.client.get(first.json()["url"], headers=imported.login("urban")).status_code == 404
    )
    assert upload_photo(b"not a jpeg").status_code == 422
    assert upload_photo(frame_jpeg(), imported.login("urban")).status_code == 404


def _issue_two_watched(world: World, then: Any) -> tuple[list[str], Any, list[str]]:
    """Findings on S1 and S2 ingested without required confirmation (two notices), every
    statement and commit recorded; ``then(session)`` reads what the test needs after. Returns
    the numbers issued, what ``then`` returned and the statements (lower case)."""
    from sqlalchemy import event

    from api.db import make_engine, session_factory
    from api.services.notices import ingest

    rules = world.settings.notices.model_copy(update={"require_confirmation": False})
    settings = world.settings.model_copy(update={"notices": rules})
    flight = new_flight(world)
    collection = findings_for(world, "S1", "road_dust", 6.0)
    collection["features"] += findings_for(world, "S2", "exposed_soil", 12.0)["features"]
    engine = make_engine(settings.database.url)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    event.listen(engine, "before_cursor_execute", seen)
    event.listen(engine, "commit", lambda _conn: statements.append("commit"))
    try:
        with session_factory(engine)() as session:
            numbers = ingest(session, settings, flight, collection).notices_issued
            read = then(session)
    finally:
        engine.dispose()
    return numbers, read, statements


def test_a_notice_is_numbered_and_accounted_last_before_the_commit(imported: World) -> None:
    """The series' counter row and the bureau's ledger total are what concurrent issues wait
    on: they are written after everything else the request does (findings, rules, the
    flight's verification), so they stay locked for the commit only."""
    from sqlalchemy import select

    from api.models.notices import BureauLedgerTotal, Notice

    numbers, (stored, issued), writes = _issue_two_watched(
        imported,
        lambda session: (
            set(session.scalars(select(Notice.number))),
            session.scalar(select(BureauLedgerTotal.issued)),
        ),
    )
    assert len(numbers) == 2 and all(n.startswith("GX-") for n in numbers)
    assert stored == set(numbers)  # no provisional number was left behind
    assert issued == 2
    first = next(i for i, s in enumerate(writes) if "notice_counters" in s)
    last_write = max(i for i, s in enumerate(writes) if s.startswith("commit"))
    tail = writes[first:last_write]
    allowed = ("notice_counters", "update notices set number", "ledger_", "outbox", "bureaus")
    strays = [s[:80] for s in tail if not any(word in s for word in allowed)]
    assert strays == [], f"between numbering and commit: {strays}"


def test_a_posted_finding_is_written_once_with_its_notice(imported: World) -> None:
    """Issuing from posted findings: the stored fingerprints are looked up once for the
    collection, each finding is inserted with its notice (no update of it after), the bureau
    is read with the site (not again to learn it has no webhook), the flight's plan is not
    read, and the notice's first event names the finding it was issued from."""
    from sqlalchemy import select

    from api.models.notices import Finding, NoticeEvent

    numbers, (findings, notes), statements = _issue_two_watched(
        imported,
        lambda session: (
            session.scalars(select(Finding)).all(),
            {
                e.notice_id: e.note
                for e in session.scalars(
                    select(NoticeEvent).where(NoticeEvent.from_state.is_(None))
                )
            },
        ),
    )
    assert len(numbers) == 2 and len(findings) == 2
    assert all(f.notice_id is not None for f in findings)
    assert {notes[f.notice_id] for f in findings} == {
        f"issued from finding {f.id}" for f in findings
    }
    updates = [s[:80] for s in statements if s.startswith("update findings")]
    assert updates == [], updates
    bureau_reads = [s[:80] for s in statements if s.startswith("select bureaus.")]
    assert bureau_reads == [], bureau_reads
    lookups = [s for s in statements if s.startswith("select findings.fingerprint")]
    assert len(lookups) == 1, lookups  # one query for the collection, not one per finding
    plans = [s[:80] for s in statements if s.startswith("select flights.") and "plan" in s]
    assert plans == [], plans  # whether the flight exists, not its plan


def test_verification_reads_only_the_rectified_notices_in_view(imported: World) -> None:
    """A later flight checks the rectified notices of the sites its frames may have seen,
    read with their sites in one query: a rectified notice elsewhere in the registry is not
    read, no site is read one by one, and of the frames only their footprints are read."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    here, elsewhere = issued_notice(imported, "S1"), issued_notice(imported, "S3")
    move(imported, "housing", here, "rectified")
    move(imported, "urban", elsewhere, "rectified")  # S3 is the urban management bureau's
    flight = _flight_seeing(imported, "S1")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        response = post(imported, flight, {"type": "FeatureCollection", "features": []})
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.text
    states = {
        number: imported.client.get(f"/notices/{number}", headers=imported.login("analyst")).json()[
            "state"
        ]
        for number in (here, elsewhere)
    }
    assert states == {here: "verified", elsewhere: "rectified"}
    one_by_one = [s[:90] for s in statements if s.startswith("select sites.") and "join" not in s]
    assert one_by_one == [], one_by_one
    whole_frames = [s[:90] for s in statements if s.startswith("select frames.id")]
    assert whole_frames == [], whole_frames  # their footprints only


def test_a_finding_twice_in_one_collection_is_stored_once(imported: World) -> None:
    flight = new_flight(imported)
    collection = findings_for(imported, "S1", "road_dust", 6.0)
    collection["features"] *= 2
    response = post(imported, flight, collection)
    assert response.status_code == 200, response.text
    assert (response.json()["created"], response.json()["unchanged"]) == (1, 1)
    again = post(imported, flight, collection)
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 2)
