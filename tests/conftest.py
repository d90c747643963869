"""Shared fixtures: a clean DUSTPATROL_* environment per test, one small simulated district."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sim.world import District, generate_district


@pytest.fixture(autouse=True)
def _clean_dustpatrol_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("DUSTPATROL_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session")
def district() -> District:
    """One small simulated district shared by the sim, geo and missions tests."""
    return generate_district(11, n_sites=14, extent_m=3_000.0)


def unavailable(reason: str) -> None:
    """Skip a test whose system dependency is missing, with the reason and what to install;
    under CI, which installs everything, fail instead: a skip there would hide a broken set-up."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} under CI: .ci/run must install it")
    pytest.skip(reason)
