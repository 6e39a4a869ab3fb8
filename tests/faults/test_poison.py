"""A poison message: a batch whose handler kills the consumer process on every delivery.

The handler comes from a test plugin (`poison_plugin.py`) the consumer loads through its
entry point; a supervisor loop plays systemd and restarts the consumer whenever it died. The
work queue's delivery limit is 2 here, to keep the crash loop short.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from contracts import BatchRequest, Mode
from tests.faults import poison_plugin
from tests.faults.model import companions, notes_batch
from tests.faults.oracle import Allowances
from tests.faults.processes import REPOSITORY
from tests.faults.scenario import Scenario

DELIVERY_LIMIT = 2


@pytest.fixture
def delivery_limit() -> int:
    return DELIVERY_LIMIT


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """Environment under which `batchops consume` finds the crashing handler."""
    plugins = poison_plugin.install(tmp_path / "plugins")
    return {"PYTHONPATH": os.pathsep.join([str(plugins), str(REPOSITORY)])}


def poison_batch(mode: Mode = Mode.CONTINUE) -> BatchRequest:
    """Operation 1 kills the consumer; in atomic mode operation 0 is rolled back with it."""
    return notes_batch(
        (20, "p0"), (21, poison_plugin.MARKER), (22, "p2"), handler=poison_plugin.HANDLER, mode=mode
    )


async def supervise(
    scenario: Scenario, env: dict[str, str], batch_id: uuid.UUID, timeout: float = 40
) -> int:
    """Restart the consumer each time it dies until `batch_id` is terminal; returns how many
    times it died."""
    deaths = 0
    current = scenario.consumers.spawn(**env)
    deadline = time.monotonic() + timeout
    while True:
        status = await scenario.db.scalar(
            "SELECT status FROM batch_operations WHERE batch_id = :b", b=batch_id
        )
        if status in {"completed", "partial", "failed"}:
            return deaths
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} is {status} after {deaths} crashes")
        if not current.alive:
            deaths += 1
            current = scenario.consumers.spawn(**env)
        await asyncio.sleep(0.05)


class TestPoisonMessage:
    @pytest.mark.parametrize(
        "mode",
        [Mode.CONTINUE, Mode.ATOMIC],
    )
    async def test_a_batch_killing_every_consumer_is_dead_lettered_finished_and_others_flow(
        self, scenario: Scenario, plugin_env: dict[str, str], mode: Mode
    ) -> None:
        poison = poison_batch(mode)
        await scenario.publish(poison)

        deaths = await supervise(scenario, plugin_env, poison.batch_id)
        for companion in [*companions(), notes_batch((25, "n0"), (26, "n1"))]:
            await scenario.publish(companion)
        await scenario.check(Allowances(poisoned={poison.batch_id: 1}, dead_letters=1))

        # The broker allows limit + 1 deliveries; the reconciler then runs the batch once more,
        # alone (it might have been a bystander), and gives up when that crashes too.
        assert 1 <= deaths <= DELIVERY_LIMIT + 2, (
            f"the batch must be given up once the delivery limit ({DELIVERY_LIMIT}) is reached; "
            f"it crashed the consumer {deaths} times"
        )
        dead = await scenario.probe.take(scenario.topology.dead_letter_queue)
        assert [m.message_id for m in dead] == [str(poison.batch_id)], (
            "the poison request itself must be the one dead-lettered"
        )

    async def test_a_batch_in_flight_beside_a_poison_message_is_not_given_up_with_it(
        self, scenario: Scenario, plugin_env: dict[str, str]
    ) -> None:
        bystander = notes_batch((25, "b0"), (26, "b1"), handler=poison_plugin.HANDLER)
        poison = poison_batch()
        async with scenario.db.holding("SELECT 1 FROM orders WHERE id = 25 FOR UPDATE") as lock:
            await scenario.publish(bystander)
            first = await scenario.consumers.start(**plugin_env)
            await scenario.db.wait_until_blocked(lock)  # in flight, unacknowledged
            await scenario.publish(poison)
            await first.wait_for_exit()  # the poison took the bystander down with it
        await supervise(scenario, plugin_env, poison.batch_id)

        # Returned by crashes it did not cause, the bystander runs again and completes: on a
        # normal redelivery, or (when the broker dead-lettered it too) in the reconciler's
        # isolated run. The oracle's model expects all its effects.
        await scenario.check(
            Allowances(poisoned={poison.batch_id: 1}, dead_letters=1, extra_dead_letters=1)
        )
