"""Login, tokens, API keys, roles and problem responses."""

from __future__ import annotations

from tests.api.conftest import PASSWORD, World


def test_login_issues_a_bearer_token(world: World) -> None:
    response = world.client.post("/auth/token", data={"username": "admin", "password": PASSWORD})
    body = response.json()
    assert (
        response.status_code == 200
        and body["token_type"] == "bearer"
        and body["expires_in"] == 1800
    )
    me = world.client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["role"] == "admin"


def test_wrong_password_is_401_problem(world: World) -> None:
    response = world.client.post(
        "/auth/token", data={"username": "admin", "password": "nope-nope-nope"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "wrong username or password"


def test_missing_and_forged_tokens_are_rejected(world: World) -> None:
    assert world.client.get("/auth/me").status_code == 401
    forged = world.client.get("/auth/me", headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401 and "not valid" in forged.json()["detail"]


def test_api_keys_authenticate_machine_clients(world: World) -> None:
    admin = world.login("admin")
    users = world.client.get("/users", headers=admin).json()
    inspector_id = next(u["id"] for u in users if u["username"] == "analyst")
    created = world.client.post(
        f"/users/{inspector_id}/api-keys", json={"label": "uploader"}, headers=admin
    )
    assert created.status_code == 201
    key = created.json()["key"]
    me = world.client.get("/auth/me", headers={"X-API-Key": key})
    assert me.json()["username"] == "analyst"
    assert world.client.get("/auth/me", headers={"X-API-Key": key + "x"}).status_code == 401


def test_only_admins_manage_users_and_bureaus(world: World) -> None:
    analyst = world.login("analyst")
    assert world.client.get("/users", headers=analyst).status_code == 403
    response = world.client.post("/bureaus", json={"name": "县交通运输局"}, headers=analyst)
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert world.client.get("/bureaus", headers=world.login("housing")).status_code == 403


def test_user_validation_errors_name_the_field(world: World) -> None:
    admin = world.login("admin")
    response = world.client.post(
        "/users", json={"username": "x1", "password": "short", "role": "analyst"}, headers=admin
    )
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert "password" in fields
    response = world.client.post(
        "/users", json={"username": "b1", "password": PASSWORD, "role": "bureau"}, headers=admin
    )
    assert response.status_code == 422 and "bureau_id" in response.json()["detail"]


def test_duplicate_bureau_and_user_are_409(world: World) -> None:
    admin = world.login("admin")
    assert (
        world.client.post("/bureaus", json={"name": "县城市管理局"}, headers=admin).status_code
        == 409
    )
    body = {"username": "analyst", "password": PASSWORD, "role": "analyst"}
    assert world.client.post("/users", json=body, headers=admin).status_code == 409
    created = world.client.post("/bureaus", json={"name": "县交通运输局"}, headers=admin)
    assert created.status_code == 201
    log = world.client.get("/audit", headers=admin).json()
    me = world.client.get("/auth/me", headers=admin).json()["id"]
    assert [(e["action"], e["subject"], e["actor_id"]) for e in log[:1]] == [
        ("bureau.created", "县交通运输局", me)
    ]
    assert "县城市管理局" not in [e["subject"] for e in log]  # the refused one left no trace


def test_health_and_openapi(world: World) -> None:
    assert world.client.get("/health").json() == {"status": "ok"}
    assert world.client.get("/health/live").json() == {"status": "ok"}
    ready = world.client.get("/health/ready")  # no login: a load balancer asks
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
    schema = world.client.get("/openapi.json").json()
    assert "/sites/import" in schema["paths"] and "/auth/token" in schema["paths"]
