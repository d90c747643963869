"""Schemathesis against the app (SQLite): generated requests for every operation of the
OpenAPI schema, as an admin and as a bureau user, with seeded data; no 5xx, and every
response conforms to the schema (status codes, content types, bodies, headers)."""

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
# Where a schema-valid request may still be refused (422) by a rule the schema cannot state.
# Every other operation runs all of schemathesis's checks, "positive data acceptance" too.
RULES_BEYOND_THE_SCHEMA = {
    "POST /users": "the password must be hard to guess (zxcvbn), not only 10 characters long",
    "GET /notices": "a cursor is opaque: one the server did not give out is refused",
    "GET /sites": "a bbox's minimum must not exceed its maximum, latitudes within +-90",
    "GET /sites/geojson": "as GET /sites",
    "GET /map/data": "as GET /sites; and `since` must not be after `until`",
    "POST /flights/{flight_id}/frames": "the file must be a JPEG, not any bytes",
    "POST /flights/{flight_id}/findings": "a FeatureCollection of findings as the pipeline "
    "writes them, not any JSON object",
    "POST /sites/import": "the file is read by its extension (.geojson, .csv, .zip, ...)",
}


@pytest.fixture(scope="module", params=["admin", "bureau"])
def admin_key(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """The app and an API key of the role the test runs as."""
    root: Path = tmp_path_factory.mktemp("schemathesis")
    app_settings = Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{root / 'dustpatrol.db'}"},
            "paths": {"data_dir": str(root / "var"), "frames_dir": str(root / "var" / "frames")},
        }
    )
    app = create_app(app_settings, worker=False)
    with session_factory(make_engine(app_settings.database.url))() as session:
        bureau = Bureau(name="县住房和城乡建设局")
        session.add(bureau)
        session.commit()
        user = add_user(
            session,
            UserCreate(
                username=request.param,
                password="correct-horse-battery",
                role=Role(request.param),
                bureau_id=bureau.id if request.param == "bureau" else None,
            ),
        )
        key, prefix, digest = new_api_key()
        session.add(ApiKey(user_id=user.id, prefix=prefix, key_hash=digest, label="schemathesis"))
        session.commit()
    yield app, key
    app.state.engine.dispose()


def test_the_api_conforms_to_its_schema(admin_key: tuple[Any, str]) -> None:
    """Every operation gets generated requests (schemathesis's strategies, driven by
    Hypothesis here: its pytest plugin does not run under this pytest); each response must
    pass schemathesis's checks. Failures are collected so one run names all of them.

    Every check runs ("checks: all"), including "positive data acceptance" (a schema-valid
    request gets 2xx or an auth/not-found/conflict answer, never a 4xx the schema did not
    warn of), except on the few operations of RULES_BEYOND_THE_SCHEMA."""
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
        excluded = [positive_data_acceptance] if operation.label in RULES_BEYOND_THE_SCHEMA else []

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            # called below, in this iteration: the loop variable is the one meant
            case.call_and_validate(headers={"X-API-Key": key}, excluded_checks=excluded)  # noqa: B023

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # record it, go on to the next one
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert operations >= 30, operations
    assert not failures, "\n\n".join(failures)
