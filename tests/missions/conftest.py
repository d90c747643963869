"""Fixtures for the simulated district: one small district shared by the sim tests."""

from __future__ import annotations

import pytest

from sim.world import District, generate_district


@pytest.fixture(scope="session")
def district() -> District:
    return generate_district(11, n_sites=14, extent_m=3_000.0)
