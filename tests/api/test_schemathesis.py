"""Schemathesis against the app (SQLite): generated requests for every operation of the
OpenAPI schema, as an admin with seeded data; no 5xx, and every response conforms to the
schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.db import make_engine, session_factory
from api.models.bureaus import Bureau
from api.models.users import ApiKey, Role, UserCreate
from api.routes.users import add_user
from api.security import new_api_key
from dustpatrol.settings import Settings

EXAMPLES = 25  # per operation


@pytest.fixture(scope="module")
def admin_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    app_settings = Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{root / 'dustpatrol.db'}"},
            "paths": {"data_dir": str(root / "var"), "frames_dir": str(root / "var" / "frames")},
        }
    )
    app = create_app(app_settings, worker=False)
    with session_factory(make_engine(app_settings.database.url))() as session:
        session.add(Bureau(name="县住房和城乡建设局"))
        session.commit()
        admin = add_user(
            session, UserCreate(username="admin", password="correct-horse-battery", role=Role.ADMIN)
        )
        key, prefix, digest = new_api_key()
        session.add(ApiKey(user_id=admin.id, prefix=prefix, key_hash=digest, label="schemathesis"))
        session.commit()
    yield app, key
    app.state.engine.dispose()


def test_the_api_conforms_to_its_schema(admin_key: tuple[Any, str]) -> None:
    """Every operation gets generated requests (schemathesis's strategies, driven by
    Hypothesis here: its pytest plugin does not run under this pytest); each response must
    pass schemathesis's checks. Failures are collected so one run names all of them.

    Left out: "positive data acceptance", which expects every schema-valid request to
    succeed; rules the schema cannot state (a bureau user needs a bureau, a deadline in the
    past, a transition the lifecycle forbids) are 4xx problems by design."""
    app, key = admin_key
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation's schema is invalid: {result.err()}")
            continue
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={"X-API-Key": key}, excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # record it, go on to the next one
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert operations >= 30, operations
    assert not failures, "\n\n".join(failures)
