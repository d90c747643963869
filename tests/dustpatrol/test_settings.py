"""Settings: defaults < config file < environment, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from dustpatrol.errors import ConfigError
from dustpatrol.settings import load_settings, masked_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dustpatrol.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file_and_keep_data_under_var() -> None:
    settings = load_settings(environ={})
    assert settings.paths.data_dir == Path("var")
    assert settings.database.url.startswith("sqlite:///var/")
    assert settings.flight.altitude_m == 100.0


def test_file_overrides_default(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[detection]\ntarget_gsd_m = 0.08\n")
    assert load_settings(config).detection.target_gsd_m == 0.08


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_toml(tmp_path, "[detection]\ntarget_gsd_m = 0.08\nthreads = 3\n")
    monkeypatch.setenv("DUSTPATROL_DETECTION__TARGET_GSD_M", "0.1")
    settings = load_settings(config)
    assert settings.detection.target_gsd_m == 0.1
    assert settings.detection.threads == 3  # the file still fills what env leaves


def test_config_file_can_come_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(tmp_path, "[server]\nport = 9001\n")
    monkeypatch.setenv("DUSTPATROL_CONFIG", str(config))
    assert load_settings().server.port == 9001


def test_nested_dict_setting_from_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[notices.deadline_hours]\nroad_dust = 2\nexposed_soil = 12\n")
    assert load_settings(config).notices.deadline_hours == {"road_dust": 2.0, "exposed_soil": 12.0}


def test_nonsense_database_url_names_field_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_DATABASE__URL", "nonsense")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "database.url" in message
    assert "DUSTPATROL_DATABASE__URL" in message
    assert "postgresql+psycopg://" in message


def test_unsupported_database_driver_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_DATABASE__URL", "mysql://u:p@localhost/db")
    with pytest.raises(ConfigError, match="driver 'mysql' is not supported"):
        load_settings()


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[detection]\ntarget_gds_m = 0.05\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'detection\.target_gds_m'"):
        load_settings(config)


def test_unknown_section_in_file_is_an_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[detecton]\ntarget_gsd_m = 0.05\n")
    with pytest.raises(ConfigError, match="unknown setting 'detecton'"):
        load_settings(config)


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_FLIGHT__ALTITUDE", "90")
    with pytest.raises(ConfigError, match="no field 'altitude'"):
        load_settings()


def test_unknown_environment_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_FLIGTH__ALTITUDE_M", "90")
    with pytest.raises(ConfigError, match="no section 'fligth'"):
        load_settings()


def test_altitude_above_legal_cap_is_rejected(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[flight]\naltitude_m = 150\n")
    with pytest.raises(ConfigError, match=r"flight\.altitude_m .*less than or equal to 120"):
        load_settings(config)


def test_wrong_type_names_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUSTPATROL_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_malformed_toml_is_an_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[detection\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config)


def test_secrets_and_database_password_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUSTPATROL_SERVER__SECRET_KEY", "s3cret-signing-key")
    monkeypatch.setenv(
        "DUSTPATROL_DATABASE__URL", "postgresql+psycopg://dp:hunter2@127.0.0.1:5432/dustpatrol"
    )
    shown = str(masked_settings(load_settings()))
    assert "s3cret-signing-key" not in shown
    assert "hunter2" not in shown
    assert "dp:***@127.0.0.1" in shown


def test_notice_rules_act_on_problems_large_and_sure_enough() -> None:
    rules = load_settings(environ={}).notices
    assert rules.acts_on("road_dust", 10.0, 0.34)
    assert not rules.acts_on("road_dust", 9.9, 0.9)  # below road dust's 10 m²
    assert not rules.acts_on("exposed_soil", 19.0, 0.9)  # below exposed soil's 20 m²
    assert not rules.acts_on("exposed_soil", 500.0, 0.33)  # unsure
    assert not rules.acts_on("covered_soil", 5000.0, 1.0)  # compliant: no notice
