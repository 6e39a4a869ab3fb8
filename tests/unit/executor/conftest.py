"""The fixture of every executor test: a fresh demo marketplace in the fake database."""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeDatabase, demo_marketplace


@pytest.fixture
def db() -> FakeDatabase:
    return demo_marketplace()
