"""kill -9 of the relay after the broker confirmed an event but before it was settled.

The relay takes unsent rows `FOR UPDATE SKIP LOCKED` (a ROW SHARE table lock), publishes them
with confirms, then deletes or marks them (ROW EXCLUSIVE). A `LOCK TABLE outbox IN SHARE
MODE` held by the test lets the first through and stops the second. It stops the consumer's
INSERT into the outbox too, so it is taken in two turns: a first SHARE lock holds operation 0's
commit back, a second one queues behind that commit and is granted the moment it is done,
before the relay can have marked anything sent.
"""

from __future__ import annotations

from contracts import operation_event_id
from tests.faults.model import notes_batch
from tests.faults.scenario import Scenario

SHARE_OUTBOX = "LOCK TABLE outbox IN SHARE MODE"


class TestRelayKilledBetweenConfirmAndMark:
    async def test_a_confirmed_but_unmarked_event_is_published_again_with_the_same_id_and_body(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with scenario.db.holding(SHARE_OUTBOX) as first_turn:
            await scenario.publish(target)
            await scenario.db.wait_until_blocked(first_turn)  # operation 0 writing its event
            async with scenario.db.holding() as second_turn:
                queued = second_turn.start(SHARE_OUTBOX)
                await scenario.db.wait_until_waiting(second_turn)
                await first_turn.release()
                await queued  # operation 0 committed; its event is unsent and locked from here
                # Published and confirmed; marking it sent waits.
                await scenario.db.wait_until_blocked(second_turn, running="UPDATE outbox")
                assert await scenario.db.unsent_events() >= 1
                first.kill()

        await scenario.consumers.start()
        report = await scenario.check()

        assert operation_event_id(target.batch_id, 0) in report.republished(), (
            "operation 0's event, confirmed by the broker but never marked sent, must have been "
            "published again after the restart"
        )
