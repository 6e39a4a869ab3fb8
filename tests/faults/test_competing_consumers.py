"""Two consumer processes competing while the same batch is published twice.

Each consumer takes one request at a time (prefetch 1), so each holds one copy; both copies
are stopped on the same order row until both runs are inside the batch, then released
together so that they race for every operation and for the completion.
"""

from __future__ import annotations

from contracts import completion_event_id
from tests.faults.model import companions, notes_batch
from tests.faults.scenario import Scenario


class TestCompetingConsumers:
    async def test_the_same_batch_run_by_two_consumers_at_once_takes_effect_once(
        self, scenario: Scenario
    ) -> None:
        for _ in range(2):
            await scenario.consumers.start(BATCHOPS_PREFETCH="1")
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"), (6, "a3"))
        async with scenario.db.holding("SELECT 1 FROM orders WHERE id = 3 FOR UPDATE") as lock:
            await scenario.publish(target, times=2)
            # Both copies are inside operation 0: one consumer each, racing from here.
            await scenario.db.wait_until_blocked(lock, count=2)
        for companion in companions():
            await scenario.publish(companion)

        report = await scenario.check()

        assert report.copies[completion_event_id(target.batch_id)] == 2, (
            "both runs must have reached the end of the batch, each (re-)publishing the one "
            "stored completion"
        )
