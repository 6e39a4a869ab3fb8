"""PostgreSQL up but in the way, under load: connections killed, connection slots exhausted by
another client, consumers deadlocking, a row lock held for seconds.

As in test_database_outages.py, each test has a PostgreSQL server of its own and 280 batches
of every kind, at least 200 of them in flight when the fault strikes; once it is over, the
oracle holds, nothing was wrongly failed and the consumer logs stay sane.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts import BatchRequest, Mode
from tests.faults.load import LOAD_BATCHES, mixed_load, orders_used
from tests.faults.model import notes_batch, orders_of
from tests.faults.pgserver import SERVICE_ROLE, SUPERUSER, PostgresServer
from tests.faults.scenario import Scenario
from tests.faults.underload import judge, running_load, strike_point

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Every client backend of the scenario database but the test's own (it connects as the
# server's superuser, batchops as its own role).
TERMINATE_SERVICE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND usename <> current_user"
)
SERVICE_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND usename = :role"
)
LOCK_ORDERS = "SELECT 1 FROM orders WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
# What PostgreSQL answers a connection beyond max_connections (the second: beyond what is left
# once the superuser's reserved slots are set aside).
REFUSED = ("too many clients already", "remaining connection slots are reserved")
EXHAUSTED_SECONDS = 10
LOCKED_SECONDS = 5


class TestConnectionsKilled:
    async def test_every_batchops_connection_terminated_mid_load_is_replaced_without_a_failure(
        self, private_scenario: Scenario
    ) -> None:
        consumer, load = await running_load(private_scenario)
        await strike_point(private_scenario, load)
        killed = int(await private_scenario.db.scalar(TERMINATE_SERVICE))
        assert killed >= 1, "the consumer must have been connected when its backends were killed"

        await judge(private_scenario, at_most_outages=1, ready_again=[consumer])


@contextlib.asynccontextmanager
async def connections_exhausted(server: PostgresServer) -> AsyncIterator[int]:
    """Another client (a role of its own) opens connections until the server refuses one,
    and holds them for the block's duration; yields how many it holds."""
    admin = await asyncpg.connect(server.url("postgres", user=SUPERUSER, driver="postgresql"))
    try:
        await admin.execute("CREATE ROLE hog LOGIN")
    finally:
        await admin.close()
    held: list[asyncpg.Connection] = []
    try:
        while True:
            try:
                held.append(await asyncpg.connect(server.url(user="hog", driver="postgresql")))
            except asyncpg.TooManyConnectionsError:
                break
        yield len(held)
    finally:
        await asyncio.gather(*(c.close(timeout=5) for c in held), return_exceptions=True)


class TestConnectionSlotsExhausted:
    @pytest.fixture
    def server_settings(self) -> dict[str, str]:
        return {"max_connections": "40"}  # a quick fill; 3 slots stay reserved to the test

    async def test_max_connections_held_by_another_client_for_ten_seconds_is_waited_out(
        self, private_scenario: Scenario, pg_server: PostgresServer
    ) -> None:
        consumer, load = await running_load(private_scenario)
        await strike_point(private_scenario, load)
        # By now the consumer's pool is full, and it would ride the exhaustion out on the
        # connections it holds: pause it, take them away, fill the server, then let it go on
        # needing new connections that the server refuses.
        consumer.pause()
        try:
            victims = {
                pid
                for (pid,) in await private_scenario.db.rows(SERVICE_BACKENDS, role=SERVICE_ROLE)
            }
            await private_scenario.db.scalar(TERMINATE_SERVICE)
            await private_scenario.db.wait_until_gone(victims)
            async with connections_exhausted(pg_server) as hogged:
                refused_before = pg_server.log_count(*REFUSED)
                consumer.resume()
                await asyncio.sleep(EXHAUSTED_SECONDS)  # the exhaustion itself
                refused = pg_server.log_count(*REFUSED) - refused_before
        finally:
            consumer.resume()
        assert victims, "the consumer must have held connections when they were taken away"
        assert hogged >= 20, f"the other client got only {hogged} connections"
        assert refused >= 1, (
            "the server refused no connection to the consumer while the other client held "
            "every slot: the scenario did not test exhaustion"
        )

        await judge(private_scenario, at_most_outages=1, ready_again=[consumer])


def opposite_pairs(count: int, first_order: int) -> list[tuple[BatchRequest, BatchRequest]]:
    """Atomic notes batches in pairs: one appends to orders a then b, the other to b then a."""
    pairs = []
    for i in range(count):
        a = first_order + 2 * i
        b = a + 1
        pairs.append(
            (
                notes_batch((a, f"x{i}-a"), (b, f"x{i}-b"), mode=Mode.ATOMIC),
                notes_batch((b, f"y{i}-b"), (a, f"y{i}-a"), mode=Mode.ATOMIC),
            )
        )
    return pairs


class TestConsumersDeadlocking:
    PREFETCH = 8

    async def test_two_consumers_locking_the_same_orders_in_opposite_order_both_get_through(
        self, private_scenario: Scenario, pg_server: PostgresServer
    ) -> None:
        # One pair per prefetch slot, beyond the load's orders. Every first batch of a pair
        # goes to the first consumer (it takes the first PREFETCH requests), every second one
        # to the other: each pair spans both processes.
        pairs = opposite_pairs(self.PREFETCH, first_order=orders_used().stop + 1)
        shared = sorted(set().union(*(orders_of(x) for x, _ in pairs)))
        load = mixed_load()
        async with private_scenario.db.holding(LOCK_ORDERS, ids=shared) as lock:
            await private_scenario.publish_commuting(pairs)
            await private_scenario.publish_all(load)
            first = await private_scenario.consumers.start_probed(
                BATCHOPS_PREFETCH=str(self.PREFETCH)
            )
            await private_scenario.db.wait_until_blocked(lock, count=self.PREFETCH)
            second = await private_scenario.consumers.start_probed(
                BATCHOPS_PREFETCH=str(self.PREFETCH)
            )
            # Each batch waits for its first order: released together, each pair's batches
            # take one order each and then wait for one another.
            await private_scenario.db.wait_until_blocked(lock, count=2 * self.PREFETCH)
            await strike_point(private_scenario, load)
            assert len(load) == LOAD_BATCHES

        await judge(private_scenario, at_most_outages=0, ready_again=[first, second])
        deadlocks = pg_server.log_count("deadlock detected")
        assert deadlocks >= 1, "PostgreSQL detected no deadlock: the scenario did not test one"


class TestRowLockHeld:
    async def test_a_row_lock_held_five_seconds_on_orders_the_load_needs_is_waited_out(
        self, private_scenario: Scenario
    ) -> None:
        load = mixed_load()
        # One order of each of the first five batches, one of each kind (notes and walks;
        # continue, stop_on_error and atomic).
        needed = [min(orders_of(batch)) for batch in load[:5]]
        async with private_scenario.db.holding(LOCK_ORDERS, ids=needed) as lock:
            await private_scenario.publish_all(load)
            consumer = await private_scenario.consumers.start_probed()
            await private_scenario.db.wait_until_blocked(lock, count=len(needed))
            await strike_point(private_scenario, load)
            await asyncio.sleep(LOCKED_SECONDS)  # the lock held: the fault itself

        await judge(private_scenario, at_most_outages=0, ready_again=[consumer])
