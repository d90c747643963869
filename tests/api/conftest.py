"""API fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``DP_TEST_POSTGRES_URL`` (an admin URL; ``.ci/run`` starts a
server and sets it). Without it those tests are skipped with the reason, except under CI,
where a skip would hide a broken set-up and fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.app import create_app
from api.db import make_engine, session_factory
from api.models.bureaus import Bureau
from api.models.users import Role, UserCreate
from api.routes.users import add_user
from dustpatrol.settings import Settings
from tests.conftest import unavailable

POSTGRES_ENV = "DP_TEST_POSTGRES_URL"  # not DUSTPATROL_*: that prefix is for settings only
PASSWORD = "correct-horse-battery"


def _postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        unavailable(f"PostgreSQL not available: set {POSTGRES_ENV} (see .ci/run)")
    assert url is not None
    return url


@contextmanager
def new_postgres_database(prefix: str = "dp_test") -> Iterator[str]:
    """A fresh database on the test server (PostGIS from its template), dropped after."""
    admin_url = make_url(_postgres_admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dustpatrol.db'}"
        return
    with new_postgres_database() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {"database": {"url": database_url}, "paths": {"data_dir": str(tmp_path / "var")}}
    )


@dataclass
class World:
    client: TestClient
    settings: Settings
    bureau_ids: dict[str, int]

    def login(self, username: str) -> dict[str, str]:
        response = self.client.post(
            "/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """An app with an admin, an analyst, and a bureau user for each of two bureaus."""
    app = create_app(settings)
    sessions = session_factory(make_engine(settings.database.url))
    bureau_ids = {}
    with sessions() as session:
        for name in ("县住房和城乡建设局", "县城市管理局"):
            bureau = Bureau(name=name)
            session.add(bureau)
            session.commit()
            bureau_ids[name] = bureau.id
        add_user(session, UserCreate(username="admin", password=PASSWORD, role=Role.ADMIN))
        add_user(session, UserCreate(username="analyst", password=PASSWORD, role=Role.ANALYST))
        add_user(
            session,
            UserCreate(
                username="housing",
                password=PASSWORD,
                role=Role.BUREAU,
                bureau_id=bureau_ids["县住房和城乡建设局"],
            ),
        )
        add_user(
            session,
            UserCreate(
                username="urban",
                password=PASSWORD,
                role=Role.BUREAU,
                bureau_id=bureau_ids["县城市管理局"],
            ),
        )
    with TestClient(app) as client:
        yield World(client, settings, bureau_ids)
    app.state.engine.dispose()
