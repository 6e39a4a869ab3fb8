"""BatchExecutor on the in-memory unit of work: a batch_id seen before (finished, running, or
stored pending by the HTTP API)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from consumer.domain.batch import BatchState
from consumer.service_layer.batch_run import Disposition
from consumer.service_layer.intake import fingerprint
from consumer.service_layer.unit_of_work import StoredBatch
from contracts import (
    BatchCompleted,
    BatchRejected,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Mode,
    Outcome,
    completion_event_id,
)
from tests.unit.executor.helpers import (
    ACCEPT_1,
    ADMIN,
    BATCH_ID,
    NOTES_3,
    PARTIAL_BATCH,
    T0,
    ConsumerCrash,
    ScriptedHandler,
    batch_body,
    batch_messages,
    delivery,
    executor_for,
    operation_messages,
    outcomes,
    stored_state,
    untouched,
)
from tests.unit.fakes import FakeDatabase


class TestDuplicateBatch:
    async def test_the_same_batch_again_resends_the_completion_and_runs_nothing(self, db):
        body = batch_body(PARTIAL_BATCH)
        await executor_for(db).handle(delivery(body))
        first = batch_messages(db)[0]
        events_before = len(operation_messages(db))
        handler = ScriptedHandler()

        disposition = await executor_for(db, handler).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert handler.calls == Counter(), "a completed batch must not execute again"
        assert len(operation_messages(db)) == events_before
        again = batch_messages(db)[1]
        assert again.routing_key == "batch.order_update.partial"
        assert (again.message_id, again.body) == (first.message_id, first.body)
        assert again.message_id == completion_event_id(BATCH_ID)

    async def test_a_resubmission_gets_the_completion_on_its_own_reply_to(self, db):
        body = batch_body(PARTIAL_BATCH)
        await executor_for(db).handle(delivery(body, correlation_id="first"))

        await executor_for(db).handle(
            delivery(body, correlation_id="second", reply_to="second-replies")
        )

        reply = db.outbox[-1]
        assert (reply.exchange, reply.routing_key, reply.correlation_id) == (
            "",
            "second-replies",
            "second",
        )
        assert BatchCompleted.model_validate_json(reply.body).correlation_id == "first"

    async def test_the_same_batch_id_with_a_different_body_is_rejected_as_a_conflict(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))
        stored_before = db.batches[BATCH_ID]
        results_before = dict(db.results)
        orders_before = {i: replace(o) for i, o in db.orders.items()}
        handler = ScriptedHandler()

        disposition = await executor_for(db, handler).handle(delivery(batch_body([NOTES_3])))

        assert disposition is Disposition.DEAD_LETTER
        assert handler.calls == Counter()
        message = db.outbox[-1]
        assert message.routing_key == "batch.order_update.rejected"
        rejection = BatchRejected.model_validate_json(message.body)
        assert rejection.code is ErrorCode.CONFLICT
        assert rejection.batch_id == BATCH_ID
        assert [e.type for e in rejection.errors] == ["batch_id_conflict"]
        assert db.batches[BATCH_ID] == stored_before, "the first batch must stay untouched"
        assert db.results == results_before
        assert db.orders == orders_before

    async def test_a_conflicting_body_for_a_batch_still_running_is_rejected_too(self, db):
        handler = ScriptedHandler({2: [ConsumerCrash()]})
        with pytest.raises(ConsumerCrash):
            await executor_for(db, handler).handle(delivery(batch_body(PARTIAL_BATCH)))

        disposition = await executor_for(db).handle(delivery(batch_body([NOTES_3])))

        assert disposition is Disposition.DEAD_LETTER
        assert stored_state(db).status is BatchStatus.PROCESSING
        assert outcomes(db) == [(0, Outcome.SUCCEEDED, 200, None)]


class TestSubmittedOverHttp:
    """The HTTP API stores a batch `pending` before publishing it (adapters/submissions.py)."""

    async def pending(self, db: FakeDatabase, body: bytes) -> None:
        request = BatchRequest.model_validate_json(body)
        db.batches[BATCH_ID] = StoredBatch(
            state=BatchState(
                batch_id=BATCH_ID,
                operation_type="order_update",
                actor_id=ADMIN,
                mode=Mode.CONTINUE,
                total=len(request.operations),
                created_at=T0,
            ),
            handler=None,
            fingerprint=fingerprint(request),
            correlation_id="http-1",
            completion_event=None,
        )

    async def test_the_consumer_takes_a_pending_batch_as_new_work(self, db):
        body = batch_body(PARTIAL_BATCH)
        await self.pending(db, body)

        disposition = await executor_for(db).handle(delivery(body, correlation_id="http-1"))

        assert disposition is Disposition.ACK
        state = stored_state(db)
        assert state.status is BatchStatus.PARTIAL
        assert state.created_at == T0, "the pending row's creation time stays"
        assert state.started_at is not None

    async def test_a_pending_batch_refused_by_policy_becomes_rejected(self, db):
        body = json.loads(batch_body([ACCEPT_1]))
        body["operations"] = [ACCEPT_1] * 2
        raw = json.dumps(body).encode()
        await self.pending(db, raw)
        executor = executor_for(db, max_operations=1)

        assert await executor.handle(delivery(raw)) is Disposition.DEAD_LETTER

        assert stored_state(db).status is BatchStatus.REJECTED
        assert db.batches[BATCH_ID].code is ErrorCode.VALIDATION_ERROR

    async def test_another_body_under_a_pending_batch_id_conflicts_and_leaves_it_pending(self, db):
        await self.pending(db, batch_body(PARTIAL_BATCH))

        disposition = await executor_for(db).handle(delivery(batch_body([NOTES_3])))

        assert disposition is Disposition.DEAD_LETTER
        assert stored_state(db).status is BatchStatus.PENDING
        assert untouched(db, 3)
