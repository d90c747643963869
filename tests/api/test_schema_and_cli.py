"""Migrations match the models; the serve, users and sites import commands work."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

import api.models  # noqa: F401
from api.db import Base, make_engine
from api.migrate import upgrade
from api.spatial import OUTSIDE_MODELS
from dustpatrol.cli import app
from dustpatrol.settings import Settings
from sim.export import write_district
from sim.world import generate_district

SPATIAL_INDEX = ("sites_rtree", "ix_sites_bbox")  # the R*Tree's own tables too: _node, ...


def test_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    engine = make_engine(database_url)
    with engine.connect() as connection:
        # The sites' spatial index (SQLite's R*Tree, a virtual table the migrations keep by
        # triggers; PostgreSQL's GiST index on an expression) lives outside the models.
        # PostGIS's geometry columns (kept by triggers from the GeoJSON text) too.
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": lambda name, kind, _: (
                    not str(name).startswith(SPATIAL_INDEX) and name not in OUTSIDE_MODELS
                )
            },
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_users_create_and_sites_import_commands(settings: Settings, tmp_path: Path) -> None:
    env = {
        "DUSTPATROL_DATABASE__URL": settings.database.url,
        "DUSTPATROL_PATHS__DATA_DIR": str(settings.paths.data_dir),
    }
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["users", "create", "chief", "--role", "admin", "--password-stdin"],
        input="a-long-password\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "created user 'chief'" in result.output
    short = runner.invoke(
        app,
        ["users", "create", "x2", "--role", "admin", "--password-stdin"],
        input="short\n",
        env=env,
    )
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    write_district(generate_district(5, n_sites=10, extent_m=2000.0), tmp_path / "d")
    result = runner.invoke(app, ["sites", "import", str(tmp_path / "d" / "sites.geojson")], env=env)
    assert result.exit_code == 0, result.output
    assert "10 created, 0 updated" in result.output
    again = runner.invoke(app, ["sites", "import", str(tmp_path / "d" / "sites.geojson")], env=env)
    assert "0 created, 0 updated" in again.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_migrates_creates_the_admin_and_answers(settings: Settings, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DUSTPATROL_DATABASE__URL": settings.database.url,
        "DUSTPATROL_PATHS__DATA_DIR": str(settings.paths.data_dir),
        "DUSTPATROL_SERVER__ADMIN_PASSWORD": "first-admin-password",
    }
    script = Path(sys.executable).with_name("dustpatrol")
    server = subprocess.Popen(
        [str(script), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        token = httpx.post(
            f"http://127.0.0.1:{port}/auth/token",
            data={"username": "admin", "password": "first-admin-password"},
        )
        assert token.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
