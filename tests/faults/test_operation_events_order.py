"""Result rows committed out of transaction order are all relayed (no sequence-gap skips).

Operation events are published from operation_results by the inserting transaction's id. Two
transactions of the test's write result rows: the first has the lower transaction id and
commits last. A relay that moved past the later one's id would skip the first for good; ours
keeps every transaction it saw running pending until it ends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts import OperationResult, Outcome, operation_event_id
from tests.faults.database import Holder
from tests.faults.oracle import Allowances
from tests.faults.scenario import Scenario
from tests.integration.helpers import eventually

INSERT_BATCH = (
    "INSERT INTO batch_operations (batch_id, operation_type, actor_id, mode, status,"
    " total_operations, fingerprint, created_at)"
    " VALUES (:b, 'order_update', 1, 'continue', 'processing', 2, :f, now())"
)
INSERT_RESULT = (
    "INSERT INTO operation_results (batch_id, index, resource_id, outcome, status_code, event)"
    " VALUES (:b, :i, 3, 'succeeded', 200, :event)"
)


def an_event(batch_id: uuid.UUID, index: int) -> bytes:
    return (
        OperationResult(
            event_id=operation_event_id(batch_id, index),
            batch_id=batch_id,
            operation_type="order_update",
            index=index,
            resource_id=3,
            status=200,
            success=True,
            outcome=Outcome.SUCCEEDED,
            data={"id": 3},
            occurred_at=datetime.now(UTC),
        )
        .model_dump_json()
        .encode()
    )


async def write_result(holder: Holder, batch_id: uuid.UUID, index: int) -> tuple[bytes, int]:
    """Insert one result row in `holder`'s transaction; returns its event and its txid."""
    event = an_event(batch_id, index)
    await holder.run(INSERT_RESULT, b=batch_id, i=index, event=event)
    txid = await holder.scalar(
        'SELECT txid FROM operation_results WHERE batch_id = :b AND "index" = :i',
        b=batch_id,
        i=index,
    )
    return event, int(txid)


class TestOperationEventsOrder:
    async def test_rows_committed_out_of_transaction_order_are_all_relayed(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        batch_id = uuid.uuid4()
        await scenario.db.execute(INSERT_BATCH, b=batch_id, f=uuid.uuid4().bytes * 2)
        early_id, late_id = operation_event_id(batch_id, 0), operation_event_id(batch_id, 1)

        async def published(event_id: uuid.UUID) -> bool:
            received = await scenario.oracle._recorder.drain()
            return str(event_id) in {event.message_id for event in received}

        async with scenario.db.holding() as early, scenario.db.holding() as late:
            early_body, early_txid = await write_result(early, batch_id, 0)
            late_body, late_txid = await write_result(late, batch_id, 1)
            assert early_txid < late_txid, "the transaction that wrote first has the lower id"
            await late.commit()
            await eventually(lambda: published(late_id), what="the later row's event relayed")
            await early.commit()
        await eventually(
            lambda: published(early_id), what="the earlier row's event, committed last, relayed"
        )

        await scenario.check(Allowances(extra_events={early_id: early_body, late_id: late_body}))
