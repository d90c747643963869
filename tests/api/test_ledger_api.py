"""Ledger and rankings: counts, on-time rates, CSV export and bureau isolation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta

from api.models.notices import Notice
from api.services.notices import mark_overdue
from tests.api.conftest import World
from tests.api.test_notices_api import _session, issued_notice, move
from tests.api.test_sites_api import imported as imported  # fixture


def test_bureaus_are_ranked_by_on_time_rectification(imported: World) -> None:
    housing = issued_notice(imported, "S1")
    urban = issued_notice(imported, "S3")
    move(imported, "housing", housing, "acknowledged")
    move(imported, "housing", housing, "rectified", "swept")
    with _session(imported) as session:
        notice = session.query(Notice).filter_by(number=urban).one()
        deadline = (
            notice.deadline if notice.deadline.tzinfo else notice.deadline.replace(tzinfo=UTC)
        )
        assert mark_overdue(session, imported.settings, deadline + timedelta(hours=1)) == [urban]

    rows = imported.client.get("/ledger/bureau", headers=imported.login("analyst")).json()
    assert [r["key"] for r in rows] == ["县住房和城乡建设局", "县城市管理局"]
    first, second = rows
    assert (
        first["rank"],
        first["issued"],
        first["rectified"],
        first["on_time"],
        first["on_time_rate"],
    ) == (1, 1, 1, 1, 1.0)
    assert first["average_hours_to_rectify"] is not None and first["average_hours_to_rectify"] < 1.0
    assert (second["issued"], second["open"], second["overdue"], second["on_time_rate"]) == (
        1,
        1,
        1,
        0.0,
    )

    per_site = imported.client.get("/ledger/site", headers=imported.login("admin")).json()
    assert {r["key"] for r in per_site} == {"S1", "S3"}


def test_ledger_csv_and_bureau_isolation(imported: World) -> None:
    issued_notice(imported, "S1")
    issued_notice(imported, "S3")
    response = imported.client.get(
        "/ledger/bureau", params={"format": "csv"}, headers=imported.login("admin")
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["key"] for r in rows} == {"县住房和城乡建设局", "县城市管理局"}
    own = imported.client.get("/ledger/bureau", headers=imported.login("urban")).json()
    assert [r["key"] for r in own] == ["县城市管理局"]


def test_ledger_period_filter_and_bad_input(imported: World) -> None:
    issued_notice(imported, "S1")
    later = imported.client.get(
        "/ledger/bureau", params={"since": "2099-01-01T00:00:00Z"}, headers=imported.login("admin")
    )
    assert later.json() == []
    bad = imported.client.get("/ledger/region", headers=imported.login("admin"))
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
