"""Hardening regressions on isolation and accounts (issue 14, items 3-6, 8, 9): each failed on
the code before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.conftest import PASSWORD, World
from tests.api.test_notices_api import findings_for, issued_notice, new_flight, post
from tests.api.test_sites_api import imported as imported
from tests.api.test_sites_api import registry_file, square, upload

HOUSING, URBAN = "县住房和城乡建设局", "县城市管理局"


def _move_s1_to_urban(world: World, tmp_path: Path) -> Any:
    path = registry_file(
        tmp_path,
        [
            ("S1", "东关工地", URBAN, square(0)),
            ("S2", "西关工地", HOUSING, square(1)),
            ("S3", "城关饭店", URBAN, square(5)),
        ],
    )
    return upload(world, path, who="admin")


def test_a_site_moved_to_another_bureau_does_not_take_the_old_bureaus_notices_along(
    imported: World, tmp_path: Path
) -> None:
    number = issued_notice(imported, "S1")  # housing's notice, with its finding and evidence
    old_findings = [
        f["id"] for f in imported.client.get("/findings", headers=imported.login("housing")).json()
    ]
    assert old_findings
    moved = _move_s1_to_urban(imported, tmp_path)
    assert moved.status_code == 200, moved.text
    assert moved.json()["reassigned"] == [
        {"site": "S1", "from_bureau": HOUSING, "to_bureau": URBAN}
    ]
    urban = imported.login("urban")
    page = imported.client.get("/map/data", headers=urban).json()
    s1 = next(f for f in page["sites"]["features"] if f["id"] == "S1")
    assert s1["properties"]["notices"] == [] and s1["properties"]["state"] == "none"
    assert page["findings"]["features"] == []
    assert imported.client.get("/findings", headers=urban).json() == []
    for finding in old_findings:
        assert imported.client.get(f"/findings/{finding}", headers=urban).status_code == 404
        evidence = imported.client.get(f"/findings/{finding}/evidence/0", headers=urban)
        assert evidence.status_code == 404
    assert imported.client.get(f"/notices/{number}", headers=urban).status_code == 404
    # The bureau that received the notice still has it and its findings.
    housing = imported.login("housing")
    assert imported.client.get(f"/notices/{number}", headers=housing).status_code == 200
    assert [
        f["id"] for f in imported.client.get("/findings", headers=housing).json()
    ] == old_findings
    # New findings on the moved site are the new bureau's business.
    post(imported, new_flight(imported), findings_for(imported, "S1", "exposed_soil", 12.0))
    assert [f["site"] for f in imported.client.get("/findings", headers=urban).json()] == ["S1"]
    log = imported.client.get(
        "/audit", params={"action": "site.reassigned"}, headers=imported.login("admin")
    ).json()
    assert [(e["subject"], e["detail"]["to_bureau"]) for e in log] == [("S1", URBAN)]


def test_only_an_admin_import_creates_bureaus_or_moves_sites(
    imported: World, tmp_path: Path
) -> None:
    path = registry_file(
        tmp_path,
        [
            ("S1", "东关工地", URBAN, square(0)),  # a move
            ("S2", "西关工地（二期）", HOUSING, square(1)),  # an ordinary update
            ("S9", "新工地", "县交通运输局", square(8)),  # an unknown bureau
        ],
    )
    for who in ("analyst", "inspector"):
        if who == "inspector":
            _add_user(imported, "inspector", "inspector")
        report = upload(imported, path, who=who)
        assert report.status_code == 200, report.text  # type: ignore[attr-defined]
        body = report.json()  # type: ignore[attr-defined]
        refused = {r["feature"]: r["problem"] for r in body["rejected"]}
        assert "only an admin moves sites" in refused["S1"]
        assert "is not registered" in refused["S9"]
        assert body["reassigned"] == []
    admin = imported.login("admin")
    assert "县交通运输局" not in {
        b["name"] for b in imported.client.get("/bureaus", headers=admin).json()
    }
    sites = {s["site_id"]: s for s in imported.client.get("/sites", headers=admin).json()}
    assert sites["S1"]["bureau"] == HOUSING and "S9" not in sites
    assert sites["S2"]["name"] == "西关工地（二期）"  # the rest of the file was imported
    by_admin = upload(imported, path, who="admin").json()  # type: ignore[attr-defined]
    assert by_admin["rejected"] == [] and by_admin["created"] == 1
    log = imported.client.get("/audit", headers=admin).json()
    assert {(e["action"], e["subject"]) for e in log} >= {
        ("bureau.created", "县交通运输局"),
        ("site.reassigned", "S1"),
    }


def test_naming_another_bureau_on_the_map_is_answered_like_an_unknown_name(
    imported: World,
) -> None:
    housing = imported.login("housing")
    other = imported.client.get("/map/data", params={"bureau": URBAN}, headers=housing)
    unknown = imported.client.get("/map/data", params={"bureau": "县不存在局"}, headers=housing)
    assert other.status_code == unknown.status_code == 422
    assert other.json()["detail"].replace(URBAN, "X") == unknown.json()["detail"].replace(
        "县不存在局", "X"
    )
    own = imported.client.get("/map/data", params={"bureau": HOUSING}, headers=housing)
    assert own.status_code == 200 and {f["id"] for f in own.json()["sites"]["features"]} == {
        "S1",
        "S2",
    }


def _add_user(world: World, username: str, role: str, bureau: int | None = None) -> int:
    response = world.client.post(
        "/users",
        json={"username": username, "password": PASSWORD, "role": role, "bureau_id": bureau},
        headers=world.login("admin"),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _login(world: World, username: str, password: str) -> Any:
    return world.client.post("/auth/token", data={"username": username, "password": password})


def test_repeated_wrong_passwords_lock_the_name_for_a_while_with_retry_after(
    world: World,
) -> None:
    statuses = [_login(world, "analyst", f"wrong-guess-{i}").status_code for i in range(5)]
    assert statuses == [401] * 5
    locked = _login(world, "analyst", PASSWORD)  # even the right password waits
    assert locked.status_code == 429, locked.text
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    assert "try again in" in locked.json()["detail"]
    # Another user from the same address is not locked by it.
    assert _login(world, "admin", PASSWORD).status_code == 200
    # An unknown name locks the same way (no oracle in the lock either).
    for i in range(5):
        assert _login(world, "nobody-here", f"wrong-guess-{i}").status_code == 401
    assert _login(world, "nobody-here", "anything-at-all").status_code == 429


def test_many_names_tried_from_one_address_lock_the_address(world: World) -> None:
    for i in range(20):  # 4 tries each on 5 names: no name reaches its own limit
        assert _login(world, f"guess-{i % 5}", f"wrong-guess-{i}").status_code == 401
    assert _login(world, "admin", PASSWORD).status_code == 429


def test_a_lock_expires_and_a_correct_password_clears_the_count(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from api.db import make_engine, session_factory
    from api.models.users import LoginThrottle

    for i in range(4):
        _login(world, "analyst", f"wrong-guess-{i}")
    assert _login(world, "analyst", PASSWORD).status_code == 200  # clears the name's count
    for i in range(4):
        assert _login(world, "analyst", f"wrong-guess-{i}").status_code == 401
    assert _login(world, "analyst", "wrong-guess-5").status_code == 401  # the 5th locks
    assert _login(world, "analyst", PASSWORD).status_code == 429
    sessions = session_factory(make_engine(world.settings.database.url))
    with sessions() as session:
        session.execute(
            update(LoginThrottle).values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    assert _login(world, "analyst", PASSWORD).status_code == 200


def test_passwords_that_are_easy_to_guess_are_refused_with_the_reason(world: World) -> None:
    admin = world.login("admin")
    for password, reason in [
        ("aaaaaaaaaa", "too easy to guess"),
        ("          ", "blank"),
        ("password123", "too easy to guess"),
        ("guessme-user", "the user name"),
    ]:
        response = world.client.post(
            "/users",
            json={"username": "guessme-user", "password": password, "role": "analyst"},
            headers=admin,
        )
        assert response.status_code == 422, (password, response.text)
        assert reason in response.text, (password, response.text)
    accepted = world.client.post(
        "/users",
        json={"username": "guessme-user", "password": "Lantern-orbit-57", "role": "analyst"},
        headers=admin,
    )
    assert accepted.status_code == 201, accepted.text


def test_a_disabled_user_and_a_revoked_key_are_refused_at_once_and_audited(
    world: World,
) -> None:
    admin = world.login("admin")
    inspector = _add_user(world, "drone-team", "inspector")
    key = world.client.post(
        f"/users/{inspector}/api-keys", json={"label": "field laptop"}, headers=admin
    ).json()
    by_key = {"X-API-Key": key["key"]}
    token = world.login("drone-team")
    assert world.client.get("/auth/me", headers=by_key).status_code == 200
    revoked = world.client.delete(f"/users/{inspector}/api-keys/{key['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = world.client.get("/auth/me", headers=by_key)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert world.client.get("/auth/me", headers=token).status_code == 200
    disabled = world.client.patch(
        f"/users/{inspector}", json={"active": False, "reason": "left the team"}, headers=admin
    )
    assert disabled.status_code == 200 and disabled.json()["active"] is False
    assert world.client.get("/auth/me", headers=token).status_code == 401  # its live token too
    assert _login(world, "drone-team", PASSWORD).status_code == 401
    log = world.client.get("/audit", headers=admin).json()
    assert [(e["action"], e["subject"], e["detail"].get("reason")) for e in log][:4] == [
        ("user.disabled", "drone-team", "left the team"),
        ("api_key.revoked", f"drone-team/{key['id']}", None),
        ("api_key.created", f"drone-team/{key['id']}", None),
        ("user.created", "drone-team", None),
    ]
    keys = world.client.get(f"/users/{inspector}/api-keys", headers=admin).json()
    assert [k["label"] for k in keys] == ["field laptop"] and "key" not in keys[0]
    # The last active admin cannot be disabled; others may not disable anyone.
    me = world.client.get("/auth/me", headers=admin).json()["id"]
    last = world.client.patch(f"/users/{me}", json={"active": False}, headers=admin)
    assert last.status_code == 409 and "last active admin" in last.json()["detail"]
    analyst = world.login("analyst")
    assert (
        world.client.patch(f"/users/{inspector}", json={"active": True}, headers=analyst)
    ).status_code == 403
