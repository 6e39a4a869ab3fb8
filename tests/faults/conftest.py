"""Fixtures of the fault suite: each test gets a `scenario` on its own database and namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumer.config import Settings
from tests.faults.scenario import Scenario, open_scenario


@pytest.fixture
def delivery_limit(settings: Settings) -> int:
    """`x-delivery-limit` of the scenario's work queue (a module may override this fixture)."""
    return settings.delivery_limit


@pytest.fixture
async def scenario(
    settings: Settings, delivery_limit: int, tmp_path: Path
) -> AsyncIterator[Scenario]:
    async with open_scenario(
        settings.model_copy(update={"delivery_limit": delivery_limit}), tmp_path
    ) as opened:
        yield opened
