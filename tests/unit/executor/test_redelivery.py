"""BatchExecutor on the in-memory unit of work: crashes, redelivery and poison messages; no
operation's effect is applied twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from consumer.domain.batch import BatchState
from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.handlers import HANDLERS, OperationContext
from consumer.service_layer.intake import fingerprint
from consumer.service_layer.unit_of_work import StoredBatch
from contracts import BatchRequest, BatchStatus, ErrorCode, Mode, Operation, Outcome
from tests.unit.executor.helpers import (
    ACCEPT_1,
    ADMIN,
    BATCH_ID,
    DELIVERY_LIMIT,
    NOTES_3,
    PARTIAL_BATCH,
    T0,
    ConsumerCrash,
    ScriptedHandler,
    an_event,
    announcement,
    batch_body,
    delivery,
    executor_for,
    operation_events,
    operation_messages,
    order_status,
    outcomes,
    result_of,
    routing_keys,
    stored_state,
    the_completion,
    untouched,
)
from tests.unit.fakes import FakeUnitOfWork, ResultRow

# -- redelivery and exactly-once effects -------------------------------------------------------


class TestRedelivery:
    async def test_a_crash_leaves_the_committed_operations_and_nothing_else(self, db):
        handler = ScriptedHandler({2: [ConsumerCrash()]})
        body = batch_body([ACCEPT_1, NOTES_3 | {"resource_id": 2}, NOTES_3])

        with pytest.raises(ConsumerCrash):
            await executor_for(db, handler).handle(delivery(body))

        assert stored_state(db).status is BatchStatus.PROCESSING
        assert outcomes(db) == [(0, Outcome.SUCCEEDED, 200, None)]
        assert routing_keys(db) == ["operation.order_update.succeeded"]
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_a_redelivered_batch_resumes_at_the_first_operation_without_a_result(self, db):
        handler = ScriptedHandler({2: [ConsumerCrash()]})
        body = batch_body([ACCEPT_1, NOTES_3 | {"resource_id": 2}, NOTES_3])
        with pytest.raises(ConsumerCrash):
            await executor_for(db, handler).handle(delivery(body))

        disposition = await executor_for(db, handler).handle(delivery(body, delivery_count=1))

        assert disposition is Disposition.ACK
        assert handler.calls == Counter({1: 1, 2: 2, 3: 1}), "operation 0 must not run twice"
        assert [e.index for e in operation_events(db)] == [0, 1, 2], "one event per operation"
        completion = the_completion(db)
        assert completion.status is BatchStatus.COMPLETED
        assert completion.completed_operations == 3
        assert order_status(db, 1) is OrderStatus.ACCEPTED
        assert db.orders[2].notes == "call before arriving"

    async def test_a_result_committed_before_a_crash_is_never_applied_again(self, db):
        # As if a previous consumer committed operation 0 (and its effect) and then died.
        request = BatchRequest.model_validate_json(batch_body(PARTIAL_BATCH))
        db.orders[1].status = OrderStatus.ACCEPTED
        db.batches[BATCH_ID] = StoredBatch(
            state=BatchState(
                batch_id=BATCH_ID,
                operation_type="order_update",
                actor_id=ADMIN,
                mode=Mode.CONTINUE,
                total=3,
                created_at=T0,
                status=BatchStatus.PROCESSING,
                completed=1,
                started_at=T0,
            ),
            handler=None,
            fingerprint=fingerprint(request),
            correlation_id="corr-1",
            completion_event=None,
        )
        db.results[(BATCH_ID, 0)] = ResultRow(
            BATCH_ID, 0, 1, Outcome.SUCCEEDED, 200, None, an_event(0, resource_id=1)
        )
        handler = ScriptedHandler()

        await executor_for(db, handler).handle(
            delivery(batch_body(PARTIAL_BATCH), delivery_count=1)
        )

        assert handler.calls[1] == 0, "operation 0 already had a result; it ran again"
        assert [e.index for e in operation_events(db)] == [1, 2]
        completion = the_completion(db)
        assert [r.index for r in completion.results] == [0, 1, 2]
        assert completion.status is BatchStatus.PARTIAL
        assert completion.started_at == T0, "a resumed batch keeps its first start time"

    async def test_an_operation_committed_meanwhile_by_a_competing_consumer_is_not_applied_twice(
        self, db
    ):
        theirs = an_event(0, resource_id=1, correlation_id="the other consumer")

        async def competing_consumer_commits_operation_0() -> None:
            async with FakeUnitOfWork(db) as uow:
                await uow.batches.add_result(
                    BATCH_ID,
                    0,
                    1,
                    Outcome.SUCCEEDED,
                    200,
                    None,
                    theirs,
                    announcement(theirs),
                    cancellable=True,
                )
                await uow.commit()

        raced: list[int] = []

        async def racing_handler(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
            data = await HANDLERS["order_update"](ctx, operation)
            if operation.resource_id == 1 and not raced:
                raced.append(1)
                await competing_consumer_commits_operation_0()
            return data

        body = batch_body([ACCEPT_1, NOTES_3])
        disposition = await executor_for(db, racing_handler).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert untouched(db, 1), "our copy of operation 0 must have been rolled back"
        assert db.results[(BATCH_ID, 0)].event == theirs
        assert [e.index for e in operation_events(db)] == [0, 1], "operation 0 announced once"
        assert operation_messages(db)[0].body == theirs, "by the consumer that committed it"
        assert stored_state(db).completed == 2

    async def test_a_requested_stop_leaves_the_rest_of_the_batch_to_redelivery(self, db):
        handler = ScriptedHandler()
        executor = executor_for(db, handler)
        handler.on_call = lambda _: executor.request_stop()

        with pytest.raises(Interrupted):
            await executor.handle(delivery(batch_body(PARTIAL_BATCH)))
        assert outcomes(db) == [(0, Outcome.SUCCEEDED, 200, None)]

        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH), delivery_count=1))
        assert the_completion(db).status is BatchStatus.PARTIAL
        assert handler.calls == Counter({1: 1})


# -- poison messages ---------------------------------------------------------------------------


class TestDeliveryLimit:
    async def test_a_dead_lettered_request_reports_the_crashing_operation_and_skips_the_rest(
        self, db
    ):
        handler = ScriptedHandler({2: [ConsumerCrash()]})
        body = batch_body([ACCEPT_1, NOTES_3 | {"resource_id": 2}, NOTES_3])
        with pytest.raises(ConsumerCrash):
            await executor_for(db, handler).handle(delivery(body))

        disposition = await executor_for(db, handler).handle(
            delivery(body, delivery_count=DELIVERY_LIMIT + 1, dead_lettered=True, give_up=True)
        )

        assert disposition is Disposition.ACK, "the reconcile copy is consumed"
        assert handler.calls == Counter({1: 1, 2: 1}), "the crashing operation must not run again"
        assert outcomes(db) == [
            (0, Outcome.SUCCEEDED, 200, None),
            (1, Outcome.FAILED, 500, "INTERNAL_ERROR"),
            (2, Outcome.SKIPPED, 424, "SKIPPED"),
        ]
        completion = the_completion(db)
        assert completion.status is BatchStatus.PARTIAL
        crashed = result_of(completion, 1)
        assert crashed.error is not None
        assert crashed.error.code is ErrorCode.INTERNAL_ERROR
        assert crashed.error.type == "InternalError"
        assert routing_keys(db)[-1] == "batch.order_update.partial"

    async def test_a_batch_never_claimed_before_it_was_dead_lettered_fails_without_running(
        self, db
    ):
        handler = ScriptedHandler()
        disposition = await executor_for(db, handler).handle(
            delivery(
                batch_body(PARTIAL_BATCH),
                delivery_count=DELIVERY_LIMIT + 1,
                dead_lettered=True,
                give_up=True,
            )
        )

        assert disposition is Disposition.ACK
        assert handler.calls == Counter()
        assert [(i, code) for i, _, _, code in outcomes(db)] == [
            (0, "INTERNAL_ERROR"),
            (1, "SKIPPED"),
            (2, "SKIPPED"),
        ]
        assert the_completion(db).status is BatchStatus.FAILED
        assert untouched(db, 1, 2, 3)

    async def test_a_dead_lettered_bystander_runs_normally_on_its_last_chance(self, db):
        handler = ScriptedHandler()
        disposition = await executor_for(db, handler).handle(
            delivery(
                batch_body(PARTIAL_BATCH), delivery_count=DELIVERY_LIMIT + 1, dead_lettered=True
            )
        )

        assert disposition is Disposition.ACK
        assert handler.calls == Counter({1: 1, 2: 1, 3: 1})
        assert the_completion(db).status is BatchStatus.PARTIAL

    async def test_an_atomic_poison_batch_blames_the_operation_it_was_running(self, db):
        handler = ScriptedHandler({2: [ConsumerCrash()]})
        body = batch_body([ACCEPT_1, NOTES_3 | {"resource_id": 2}, NOTES_3], mode=Mode.ATOMIC)
        with pytest.raises(ConsumerCrash):
            await executor_for(db, handler).handle(delivery(body))

        await executor_for(db, handler).handle(delivery(body, dead_lettered=True, give_up=True))

        assert [(i, code) for i, _, _, code in outcomes(db)] == [
            (0, "SKIPPED"),
            (1, "INTERNAL_ERROR"),
            (2, "SKIPPED"),
        ]
        assert untouched(db, 1)

    async def test_even_the_last_allowed_delivery_runs_normally(self, db):
        # Only the broker's dead letter ends a batch early: a message returned unprocessed
        # (prefetched by a consumer that was killed) must not count as a crash.
        disposition = await executor_for(db).handle(
            delivery(batch_body(PARTIAL_BATCH), delivery_count=DELIVERY_LIMIT)
        )

        assert disposition is Disposition.ACK
        assert the_completion(db).status is BatchStatus.PARTIAL
