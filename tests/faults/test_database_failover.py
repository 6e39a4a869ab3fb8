"""PostgreSQL failover under load: the primary stops, its synchronous standby is promoted, and
batchops, given both hosts with `target_session_attrs=read-write`, finishes every batch on the
new primary exactly once.

The primary and the standby are servers of the test's own (initdb, then pg_basebackup of it,
streaming synchronously), never the machine's shared server. 280 four-operation batches flow
through one consumer; with at least 200 of them still in flight the primary is stopped (fast
mode, as a planned switch-over or a failed host does to its connections) and the standby
promoted. The oracle then holds (nothing lost, duplicated, stuck or wrongly failed), the
consumer logged the outage once and is ready again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumer.config import Settings
from tests.conftest import ServiceUrls
from tests.faults.load import LOAD_ORDERS
from tests.faults.pgserver import SUPERUSER, PostgresServer
from tests.faults.pgstandby import StandbyServer, multi_host_url
from tests.faults.scenario import Scenario, open_scenario
from tests.faults.underload import judge, running_load, strike_point

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
async def standby(pg_server: PostgresServer) -> AsyncIterator[StandbyServer]:
    await pg_server.create_service_database(orders=LOAD_ORDERS)
    async with StandbyServer(pg_server) as server:
        yield server


@pytest.fixture
async def failover_scenario(
    service_urls: ServiceUrls,
    namespace: str,
    pg_server: PostgresServer,
    standby: StandbyServer,
    tmp_path: Path,
) -> AsyncIterator[Scenario]:
    """The service and the test both name the two servers, primary first."""
    servers = [pg_server, standby]
    settings = Settings(
        amqp_url=service_urls.amqp,
        database_url=multi_host_url(servers),
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
        observer_url=multi_host_url(servers, user=SUPERUSER),
        seeded_orders=range(1, LOAD_ORDERS + 1),
    ) as opened:
        yield opened


class TestFailoverToTheStandby:
    async def test_the_promoted_standby_finishes_every_batch_exactly_once(
        self,
        failover_scenario: Scenario,
        pg_server: PostgresServer,
        standby: StandbyServer,
    ) -> None:
        consumer, load = await running_load(failover_scenario)
        await strike_point(failover_scenario, load)
        await pg_server.stop("fast")
        await standby.promote()

        await judge(failover_scenario, outages=1, ready_again=[consumer])
