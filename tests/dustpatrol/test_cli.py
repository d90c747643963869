"""The CLI: help, version, config show, doctor, and one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dustpatrol import __version__
from dustpatrol.cli import EXIT_CONFIG, app
from tests.conftest import RedisServer

runner = CliRunner()


def run_console_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed `dustpatrol` script, as a user runs it."""
    script = Path(sys.executable).with_name("dustpatrol")
    return subprocess.run(
        [str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "config", "doctor"):
        assert command in result.output


def test_version_prints_installed_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"dustpatrol {__version__}"
    assert __version__ != "0+unknown"


def test_config_show_prints_effective_settings_as_toml(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[detection]\nthreads = 3\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "config", "show"])
    assert result.exit_code == 0, result.output
    assert "[detection]" in result.output
    assert "threads = 3" in result.output


def test_config_show_json_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_SERVER__ADMIN_PASSWORD", "correct horse")
    result = runner.invoke(app, ["config", "show", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["server"]["admin_password"] == "********"
    assert "correct horse" not in result.output


def test_bad_setting_is_one_line_and_exit_code_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_DATABASE__URL", "nonsense")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == EXIT_CONFIG
    assert "database.url" in result.output
    assert "Traceback" not in result.output


def test_unknown_key_in_config_file_via_console_script(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[flight]\nrequire_rtk = false\n", encoding="utf-8")
    completed = run_console_script("--config", str(config), "config", "show", cwd=tmp_path)
    assert completed.returncode == EXIT_CONFIG
    assert "unknown setting 'flight.require_rtk'" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[flight]\nrequire_rtk = false\n", encoding="utf-8")
    completed = run_console_script(
        "--debug", "--config", str(config), "config", "show", cwd=tmp_path
    )
    assert completed.returncode != 0
    assert "Traceback" in completed.stderr
    assert "ConfigError" in completed.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["fly-to-the-moon"])
    assert result.exit_code == 2


def test_doctor_reports_checks_and_passes_on_a_fresh_tree(tmp_path: Path) -> None:
    completed = run_console_script("doctor", cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for name in ("python", "packages", "settings", "data folder", "database", "model"):
        assert name in completed.stdout
    assert "no detector weights" in completed.stdout  # no model in an empty folder: a warning


def test_doctor_fails_and_says_how_when_database_is_unreachable(tmp_path: Path) -> None:
    env_url = "postgresql+psycopg://dp:pw@127.0.0.1:1/dustpatrol"
    result = runner.invoke(app, ["doctor"], env={"DUSTPATROL_DATABASE__URL": env_url})
    assert result.exit_code == 1
    assert "database" in result.output
    assert "fix:" in result.output


def test_doctor_reports_a_corrupt_sqlite_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    result = runner.invoke(app, ["doctor"], env={"DUSTPATROL_DATABASE__URL": f"sqlite:///{broken}"})
    assert result.exit_code == 1
    assert "broken.db" in result.output


def test_doctor_opens_the_model_and_says_its_thresholds(tmp_path: Path) -> None:
    from dustpatrol.doctor import CheckStatus, check_model
    from dustpatrol.settings import Settings

    shipped = Path(__file__).resolve().parents[2] / "models" / "dustpatrol-seg-int8.onnx"
    check = check_model(Settings.model_validate({"detection": {"model_path": str(shipped)}}))
    assert check.status is CheckStatus.OK
    assert "exposed_soil > " in check.detail and "the model's own" in check.detail
    one = Settings.model_validate(
        {"detection": {"model_path": str(shipped), "min_confidence": 0.3}}
    )
    assert "0.3 for every class" in check_model(one).detail
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model" * 100)
    result = runner.invoke(app, ["doctor"], env={"DUSTPATROL_DETECTION__MODEL_PATH": str(broken)})
    assert result.exit_code == 1
    assert "broken.onnx is not a usable ONNX model" in result.output
    assert "fix:" in result.output


def test_doctor_reports_bad_settings_without_crashing() -> None:
    result = runner.invoke(app, ["doctor"], env={"DUSTPATROL_SERVER__PORT": "0"})
    assert result.exit_code == 1
    assert "server.port" in result.output


def test_doctor_checks_the_broker_and_postgis(tmp_path: Path, redis_server: RedisServer) -> None:
    from dustpatrol.doctor import CheckStatus, check_database, check_queue
    from dustpatrol.settings import Settings

    def settings(**sections: object) -> Settings:
        return Settings.model_validate({"paths": {"data_dir": str(tmp_path)}, **sections})

    embedded = check_queue(settings())
    assert embedded.status is CheckStatus.OK and "service's process" in embedded.detail
    up = check_queue(settings(queue={"url": redis_server.url(5)}))
    assert up.status is CheckStatus.OK and "waiting frames 0" in up.detail, up
    down = check_queue(settings(queue={"url": "redis://:secret@127.0.0.1:1/0"}))
    assert down.status is CheckStatus.FAIL and "redis-server" in down.fix
    assert "secret" not in down.detail  # the password is not shown
    postgres = os.environ.get("DP_TEST_POSTGRES_URL")
    if not postgres:
        return
    from sqlalchemy import create_engine, text

    from tests.api.conftest import new_postgres_database

    with new_postgres_database("dp_doctor") as url:  # PostGIS from the template
        found = check_database(settings(database={"url": url}))
        assert found.status is CheckStatus.OK and "PostGIS 3" in found.detail, found
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP EXTENSION postgis"))
        engine.dispose()
        missing = check_database(settings(database={"url": url}))
        assert missing.status is CheckStatus.WARN and "postgresql-postgis" in missing.fix
