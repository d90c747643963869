"""Shared fixtures: every test starts from a clean DUSTPATROL_* environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_dustpatrol_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("DUSTPATROL_"):
            monkeypatch.delenv(key)
    yield
