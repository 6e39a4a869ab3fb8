"""PostgreSQL restarted, or down for a while, under load: work waits, nothing fails.

Each test runs a PostgreSQL server of its own (`pg_server`), never the machine's shared one,
and 280 four-operation batches of every kind (tests/faults/load.py). A fault strikes with at
least 200 of them not yet terminal; once it healed, the oracle holds, nothing was wrongly
failed (no 500, 503 or 424 the model without the fault does not predict), no request was
dead-lettered, and each consumer logged the outage once, without a traceback per delivery.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.load import LOAD_BATCHES, mixed_load
from tests.faults.pgserver import PostgresServer, ShutdownMode
from tests.faults.scenario import Scenario
from tests.faults.underload import judge, running_load, strike_point

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class TestPostgresRestartedUnderLoad:
    @pytest.mark.parametrize("mode", ["fast", "immediate"])
    async def test_a_restart_mid_load_changes_nothing_but_latency(
        self, private_scenario: Scenario, pg_server: PostgresServer, mode: ShutdownMode
    ) -> None:
        consumer, load = await running_load(private_scenario)
        await strike_point(private_scenario, load)
        await pg_server.restart(mode)

        await judge(private_scenario, outages=1, ready_again=[consumer])


class TestPostgresDownAtStartUp:
    """The service starts while the server is down; the load is published before it is back.
    The consumer cannot subscribe meanwhile, so it is waited for through its readiness probe
    (alive, not ready), not through its `consuming` log line."""

    @pytest.mark.parametrize(
        "outage",
        [
            pytest.param(10.0, id="up-after-10s"),
            pytest.param(60.0, id="up-after-60s", marks=pytest.mark.timeout(330)),
        ],
    )
    @pytest.mark.parametrize("command", ["serve", "consume"])
    async def test_the_service_started_while_postgres_is_down_holds_the_load_until_it_is_up(
        self,
        private_scenario: Scenario,
        pg_server: PostgresServer,
        command: str,
        outage: float,
    ) -> None:
        load = mixed_load()
        async with pg_server.down():
            began = time.monotonic()
            service = private_scenario.consumers.spawn_probed(command)
            status = await service.wait_until_answering()
            assert status == 503, (
                f"/readyz answered {status} while the database is down: it must say 503"
            )
            # Published during the outage: all of them are in flight when it ends.
            await private_scenario.publish_all(load)
            await asyncio.sleep(max(0.0, outage - (time.monotonic() - began)))
            assert service.alive, f"`batchops {command}` died in the outage:\n{service.log()}"
        assert len(load) == LOAD_BATCHES

        await judge(private_scenario, outages=1, ready_again=[service])


class TestPostgresDownMidRun:
    async def test_thirty_seconds_down_mid_load_are_waited_out(
        self, private_scenario: Scenario, pg_server: PostgresServer
    ) -> None:
        consumer, load = await running_load(private_scenario)
        await strike_point(private_scenario, load)
        await pg_server.down_for(30)
        assert consumer.alive, f"the consumer died in the outage:\n{consumer.log()[-4000:]}"

        await judge(private_scenario, outages=1, ready_again=[consumer])
