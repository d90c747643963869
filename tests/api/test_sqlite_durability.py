"""SQLite's sync setting: commits without an fsync each (the default) still survive the service
being killed; "full" is there for machines whose power may fail; nonsense is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from api.db import make_engine
from dustpatrol.settings import Settings


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
def test_sqlite_connections_use_the_configured_sync(
    tmp_path: Path, setting: str, pragma: int
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", sqlite_synchronous=setting)
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA synchronous")) == pragma
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
    engine.dispose()


def test_the_default_is_normal_and_a_bad_value_is_refused_with_the_choices() -> None:
    assert Settings().database.sqlite_synchronous == "normal"
    with pytest.raises(ValidationError, match="'normal' or 'full'"):
        Settings.model_validate({"database": {"sqlite_synchronous": "off"}})
    with pytest.raises(ValueError, match="'normal' or 'full'"):
        make_engine("sqlite:///:memory:", sqlite_synchronous="off")


def test_a_commit_survives_the_service_being_killed_right_after_it(tmp_path: Path) -> None:
    """Killed with SIGKILL the moment the commit returns (no clean close, no checkpoint): the
    row is there when the database is opened again."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    child = f"""
import os, signal
from sqlalchemy import text
from api.db import make_engine
engine = make_engine({url!r})
with engine.connect() as connection:
    connection.execute(text("CREATE TABLE notices (number TEXT)"))
    connection.commit()
    for i in range(50):
        connection.execute(text("INSERT INTO notices VALUES (:n)"), {{"n": f"GX-{{i}}"}})
        connection.commit()
    os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).parents[2])
    assert result.returncode == -9
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM notices")) == 50
        assert connection.scalar(text("SELECT max(number) FROM notices")) == "GX-9"
    engine.dispose()
