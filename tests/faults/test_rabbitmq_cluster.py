"""A three-node RabbitMQ cluster losing nodes under load: nothing lost, duplicated, stuck or
wrongly failed, and no publisher confirm lost.

The module runs one cluster of its own (tests/faults/rabbitcluster.py); each test gets a fresh
namespace on it with every node running. Two `batchops consume` processes run, the first
connected to node 0 (where the scenario's publisher declared the work queue, so its leader is
there), the second to node 1, when 280 four-operation batches are published. At least 200
batches are still in flight when the fault strikes and when it is over (the consumers are
paused while a node shuts down: see `striking`), and a producer keeps publishing fresh batches
through it, publishing again whatever the broker did not confirm. Once the fault is
over, the oracle judges every batch; the consumers answer /readyz with 200 again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceUrls
from tests.faults.clusterload import (
    SteadyProducer,
    cluster_scenario,
    striking,
    two_consumers_under_load,
)
from tests.faults.rabbitcluster import RabbitCluster
from tests.faults.scenario import Scenario
from tests.faults.underload import judge

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """One cluster for the module (starting one takes ~15 s); its methods run in any loop."""
    cluster = RabbitCluster()
    asyncio.run(cluster.__aenter__())
    try:
        yield cluster
    finally:
        asyncio.run(cluster.__aexit__(None, None, None))


@pytest.fixture
async def scenario(
    rabbit_cluster: RabbitCluster, service_urls: ServiceUrls, template_database: str, tmp_path: Path
) -> AsyncIterator[Scenario]:
    async with cluster_scenario(
        rabbit_cluster, service_urls, template_database, tmp_path
    ) as opened:
        yield opened


class TestRabbitMQClusterUnderLoad:
    async def test_stopping_the_node_holding_the_work_queue_s_leader_loses_nothing(
        self, scenario: Scenario, rabbit_cluster: RabbitCluster
    ) -> None:
        leader = await rabbit_cluster.leader_of(scenario.topology.requests_queue)
        consumers, load = await two_consumers_under_load(scenario, rabbit_cluster, (0, 1))
        producer = SteadyProducer(scenario)
        async with producer.running():
            async with striking(scenario, consumers, load):
                await rabbit_cluster.stop(leader)
            new_leader = await rabbit_cluster.leader_of(scenario.topology.requests_queue)

        assert new_leader != leader
        await judge(scenario, ready_again=consumers)
        assert producer.confirmed > 0

    async def test_stopping_the_node_a_consumer_is_connected_to_loses_nothing(
        self, scenario: Scenario, rabbit_cluster: RabbitCluster
    ) -> None:
        assert await rabbit_cluster.leader_of(scenario.topology.requests_queue) == 0
        consumers, load = await two_consumers_under_load(scenario, rabbit_cluster, (0, 1))
        producer = SteadyProducer(scenario)
        async with producer.running(), striking(scenario, consumers, load):
            assert "batchops" in await rabbit_cluster.connection_names_on(1), (
                "the second consumer is not connected to node 1"
            )
            await rabbit_cluster.stop(1)

        await judge(scenario, ready_again=consumers)
        assert producer.confirmed > 0

    async def test_a_rolling_restart_of_every_node_loses_nothing(
        self, scenario: Scenario, rabbit_cluster: RabbitCluster
    ) -> None:
        consumers, load = await two_consumers_under_load(scenario, rabbit_cluster, (0, 1))
        producer = SteadyProducer(scenario)
        async with producer.running():
            async with striking(scenario, consumers, load):
                await rabbit_cluster.restart(0)
            for node in range(1, len(rabbit_cluster.nodes)):
                # As an operator upgrading node by node: stop one only when the others hold
                # a majority of every quorum queue.
                await rabbit_cluster.await_safe_to_stop(node)
                await rabbit_cluster.restart(node)

        await judge(scenario, ready_again=consumers)
        assert producer.confirmed > 0
