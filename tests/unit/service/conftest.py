"""Every use-case test gets a fresh set of fakes."""

from __future__ import annotations

import pytest

from tests.unit.fakes import World, world


@pytest.fixture
def w() -> World:
    return world()
