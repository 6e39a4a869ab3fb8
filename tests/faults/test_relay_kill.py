"""kill -9 of the relay after the broker confirmed events but before it recorded them as sent.

Operation events are published from their result rows, then the relay moves its position
(an UPDATE of relay_positions). A `LOCK TABLE relay_positions IN SHARE MODE` held by the test
lets the relay read its position and publish, and stops that UPDATE: the events are out and
confirmed, and nothing records it when the consumer dies.
"""

from __future__ import annotations

from contracts import operation_event_id
from tests.faults.model import notes_batch
from tests.faults.scenario import Scenario

SHARE_POSITION = "LOCK TABLE relay_positions IN SHARE MODE"


class TestRelayKilledBetweenConfirmAndMark:
    async def test_confirmed_but_unrecorded_events_are_published_again_with_the_same_id_and_body(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with scenario.db.holding(SHARE_POSITION) as lock:
            await scenario.publish(target)
            await scenario.db.wait_for_results(target.batch_id, 3)
            # Published and confirmed; recording it waits behind the test's lock.
            await scenario.db.wait_until_blocked(lock, running="UPDATE relay_positions")
            assert await scenario.db.unsent_events() >= 1
            first.kill()

        await scenario.consumers.start()
        report = await scenario.check()

        republished = set(report.republished())
        assert operation_event_id(target.batch_id, 0) in republished, (
            "operation 0's event, confirmed by the broker but never recorded as sent, must have "
            f"been published again after the restart; republished: {republished}"
        )
