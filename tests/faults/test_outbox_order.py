"""Outbox rows committed out of id order are all relayed (no sequence-gap skips).

Two transactions of the test's write outbox rows: the first takes the lower id and commits
last. A relay that remembered the highest id it had sent would skip it for good.
"""

from __future__ import annotations

import json
import uuid

from tests.faults.database import Holder
from tests.faults.model import notes_batch
from tests.faults.oracle import Allowances
from tests.faults.scenario import Scenario
from tests.integration.helpers import eventually

INSERT_EVENT = (
    "INSERT INTO outbox (exchange, routing_key, message_id, body)"
    " VALUES (:exchange, 'test.outbox.order', :message_id, :body)"
)


async def write_event(holder: Holder, exchange: str) -> tuple[uuid.UUID, bytes, int]:
    """Insert one event in `holder`'s transaction; returns its id, body and outbox row id."""
    event_id = uuid.uuid4()
    body = json.dumps({"event_id": str(event_id)}).encode()
    await holder.run(INSERT_EVENT, exchange=exchange, message_id=event_id, body=body)
    row_id = await holder.scalar("SELECT id FROM outbox WHERE message_id = :m", m=event_id)
    return event_id, body, int(row_id)


class TestOutboxOrder:
    async def test_rows_committed_out_of_id_order_are_all_relayed(self, scenario: Scenario) -> None:
        await scenario.consumers.start()
        exchange = scenario.topology.results_exchange

        async def sent(event_id: uuid.UUID) -> bool:
            found = await scenario.db.scalar(
                "SELECT sent_at IS NOT NULL FROM outbox WHERE message_id = :m", m=event_id
            )
            return bool(found)

        async with scenario.db.holding() as early, scenario.db.holding() as late:
            early_id, early_body, early_row = await write_event(early, exchange)
            late_id, late_body, late_row = await write_event(late, exchange)
            assert early_row < late_row, "the transaction that inserted first holds the lower id"
            await late.commit()
            await eventually(lambda: sent(late_id), what="the later row relayed")
            # A batch's events commit meanwhile too, with ids above the early row's.
            batch = notes_batch((3, "a0"), (6, "a1"))
            await scenario.publish(batch)
            await scenario.db.wait_for_results(batch.batch_id, 2)
            await early.commit()
        await eventually(lambda: sent(early_id), what="the earlier row, committed last, relayed")

        await scenario.check(Allowances(extra_events={early_id: early_body, late_id: late_body}))
