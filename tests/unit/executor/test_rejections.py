"""BatchExecutor on the in-memory unit of work: refused requests are dead-lettered with a
rejection, and recorded when their batch_id can be read."""

from __future__ import annotations

import json
from dataclasses import replace

from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition
from contracts import BatchRejected, BatchStatus, ErrorCode
from tests.unit.executor.helpers import (
    ACCEPT_1,
    BATCH_ID,
    NOTES_3,
    PARTIAL_BATCH,
    batch_body,
    delivery,
    executor_for,
    order_status,
    routing_keys,
    stored_state,
    untouched,
)


class TestInvalidRequest:
    async def test_an_invalid_request_is_dead_lettered_with_a_rejection_and_nothing_else(self, db):
        body = json.loads(batch_body(PARTIAL_BATCH))
        body["operations"][0]["resource_id"] = 0

        disposition = await executor_for(db).handle(delivery(json.dumps(body).encode()))

        assert disposition is Disposition.DEAD_LETTER
        assert routing_keys(db) == ["batch.order_update.rejected"]
        rejection = BatchRejected.model_validate_json(db.outbox[0].body)
        assert rejection.code is ErrorCode.VALIDATION_ERROR
        assert rejection.correlation_id == "corr-1"
        assert untouched(db, 1, 2, 3)
        # Its batch_id and actor_id are valid: the batch is on record as rejected, run never.
        stored = db.batches[rejection.batch_id]
        assert stored.state.status is BatchStatus.REJECTED
        assert (stored.code, stored.errors) == (ErrorCode.VALIDATION_ERROR, rejection.errors)
        assert stored.completion_event == db.outbox[0].body
        assert db.results == {}

    async def test_two_different_unparseable_messages_get_their_own_ids_and_correlations(self, db):
        first = replace(delivery(b"not json", correlation_id="a"), message_id="m1")
        second = replace(delivery(b"not json", correlation_id="b"), message_id="m2")
        await executor_for(db).handle(first)
        await executor_for(db).handle(second)

        one, other = (BatchRejected.model_validate_json(m.body) for m in db.outbox)
        assert one.event_id != other.event_id, "a subscriber de-duplicating would drop one"
        assert (one.correlation_id, other.correlation_id) == ("a", "b")

    async def test_a_rejected_batch_id_is_taken_later_bodies_conflict_and_it_stays(self, db):
        invalid = json.loads(batch_body([ACCEPT_1]))
        invalid["mode"] = "sometimes"
        await executor_for(db).handle(delivery(json.dumps(invalid).encode()))

        disposition = await executor_for(db).handle(delivery(batch_body([ACCEPT_1])))

        assert disposition is Disposition.DEAD_LETTER
        conflict = BatchRejected.model_validate_json(db.outbox[-1].body)
        assert conflict.code is ErrorCode.CONFLICT
        assert stored_state(db).status is BatchStatus.REJECTED
        assert untouched(db, 1)

    async def test_the_same_request_sent_again_after_its_refusal_was_fixed_runs(self, db):
        body = batch_body([ACCEPT_1, NOTES_3])
        await executor_for(db, max_operations=1).handle(delivery(body))
        assert stored_state(db).status is BatchStatus.REJECTED

        disposition = await executor_for(db).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert stored_state(db).status is BatchStatus.COMPLETED
        assert db.batches[BATCH_ID].code is None
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_a_redelivered_rejection_keeps_its_event_id(self, db):
        await executor_for(db).handle(delivery(b"not json"))
        await executor_for(db).handle(delivery(b"not json", delivery_count=1))

        first, second = db.outbox
        assert first.routing_key == second.routing_key == "batch.unknown.rejected"
        assert first.message_id == second.message_id
