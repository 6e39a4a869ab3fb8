"""The consumer's broker connection cut or black-holed mid-batch by a TCP proxy, then healed.

The consumer reaches RabbitMQ only through the proxy, with a 2 s heartbeat and a 1 s reconnect
interval (both from the AMQP URL); the test's own publisher and recorder connect directly. The
batch under fault is paused on a row lock while the fault starts, then released so that it runs
on while the consumer cannot reach the broker (its ack and its events have nowhere to go).
"""

from __future__ import annotations

import pytest

from tests.faults.database import Holder
from tests.faults.model import companions, notes_batch
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import Scenario
from tests.integration.helpers import eventually

HEARTBEAT_SECONDS = 2
LOCK_ORDER_6 = "SELECT 1 FROM orders WHERE id = 6 FOR UPDATE"


@pytest.fixture
async def proxy(scenario: Scenario) -> TcpProxy:
    """A proxy to the broker, and one consumer connected through it."""
    proxy = await scenario.proxy_to_broker()
    url = scenario.amqp_url_via(proxy, heartbeat=str(HEARTBEAT_SECONDS), reconnect_interval="1")
    await scenario.consumers.start(BATCHOPS_AMQP_URL=url)
    return proxy


async def pause_mid_batch(scenario: Scenario, order_6: Holder) -> None:
    """Publish the batch under fault (and its companions) and let operation 0 commit; the
    caller holds order 6, so operation 1 waits."""
    target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
    await scenario.publish(target)
    for companion in companions():
        await scenario.publish(companion)
    await scenario.db.wait_for_results(target.batch_id, 1)
    await scenario.db.wait_until_blocked(order_6)


async def broker_lost_the_consumer(scenario: Scenario, timeout: float) -> None:
    requests = scenario.topology.requests_queue

    async def no_consumer() -> bool:
        return (await scenario.probe.depth(requests)).consumers == 0

    await eventually(no_consumer, what="the broker dropped the silent consumer", timeout=timeout)


class TestBrokerConnectionDropped:
    async def test_a_connection_reset_mid_batch_is_survived_by_reconnecting(
        self, scenario: Scenario, proxy: TcpProxy
    ) -> None:
        async with scenario.db.holding(LOCK_ORDER_6) as lock:
            await pause_mid_batch(scenario, lock)
            connected = proxy.accepted
            assert proxy.drop() >= 1, "the consumer must have been connected through the proxy"
            await lock.release()  # the batch runs on while the consumer reconnects
            await proxy.wait_for_accepted(connected + 1, timeout=20)

        await scenario.check()


class TestBrokerConnectionBlackholed:
    async def test_a_blackhole_longer_than_two_heartbeats_then_healed_is_survived(
        self, scenario: Scenario, proxy: TcpProxy
    ) -> None:
        async with scenario.db.holding(LOCK_ORDER_6) as lock:
            await pause_mid_batch(scenario, lock)
            connected = proxy.accepted
            proxy.blackhole()  # new connections too: a partition
            await lock.release()
            # The broker gives up on a peer after two missed heartbeats: the partition has
            # lasted longer than that once it dropped the consumer.
            await broker_lost_the_consumer(scenario, timeout=6 * HEARTBEAT_SECONDS)
            proxy.heal()
            await proxy.wait_for_accepted(connected + 1, timeout=20)

        await scenario.check()

    async def test_a_connection_blackholed_for_good_is_detected_by_heartbeats_and_replaced(
        self, scenario: Scenario, proxy: TcpProxy
    ) -> None:
        async with scenario.db.holding(LOCK_ORDER_6) as lock:
            await pause_mid_batch(scenario, lock)
            connected = proxy.accepted
            proxy.blackhole(new_connections=False)  # a half-open connection; new ones work
            await lock.release()
            # Nothing tells the consumer its connection is dead but its missing heartbeats.
            await proxy.wait_for_accepted(connected + 1, timeout=10 * HEARTBEAT_SECONDS)

        await scenario.check()
