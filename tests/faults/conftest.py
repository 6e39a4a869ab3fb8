"""Fixtures of the fault suite: each test gets a `scenario` on its own database and namespace,
or a `private_scenario` on a PostgreSQL server of its own (`pg_server`) that it may stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumer.config import Settings
from tests.conftest import ServiceUrls
from tests.faults.load import LOAD_ORDERS
from tests.faults.pgserver import SUPERUSER, PostgresServer
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


@pytest.fixture
def server_settings() -> dict[str, str]:
    """Extra postgresql.conf settings of the test's own server (a class may override this)."""
    return {}


@pytest.fixture
async def pg_server(server_settings: dict[str, str]) -> AsyncIterator[PostgresServer]:
    """A PostgreSQL server of the test's own, on a free port, torn down after the test."""
    async with PostgresServer(server_settings) as server:
        yield server


@pytest.fixture
async def private_scenario(
    service_urls: ServiceUrls, namespace: str, pg_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[Scenario]:
    """A scenario whose database lives on `pg_server`, seeded with LOAD_ORDERS orders; the
    service connects as the `batchops` role, the test as the server's superuser."""
    database_url = await pg_server.create_service_database(orders=LOAD_ORDERS)
    settings = Settings(
        amqp_url=service_urls.amqp,
        database_url=database_url,
        namespace=namespace,
        relay_poll_seconds=0.05,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
        shutdown_timeout_seconds=10,
        db_pool_size=4,
    )
    async with open_scenario(
        settings,
        tmp_path,
        observer_url=pg_server.url(user=SUPERUSER),
        seeded_orders=range(1, LOAD_ORDERS + 1),
    ) as opened:
        yield opened
