"""BatchExecutor on the in-memory unit of work: the three modes (continue, stop_on_error, atomic)
and custom handlers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.domain.errors import PermissionDenied
from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition
from consumer.service_layer.handlers import OperationContext
from contracts import (
    BatchStatus,
    ErrorCode,
    Mode,
    Operation,
    Outcome,
    completion_event_id,
    operation_event_id,
)
from tests.unit.executor.helpers import (
    ACCEPT_1,
    ADMIN,
    BATCH_ID,
    COMPLETE_2,
    NOTES_3,
    PARTIAL_BATCH,
    RESULTS_EXCHANGE,
    ScriptedHandler,
    batch_body,
    batch_messages,
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

# -- continue ----------------------------------------------------------------------------------


class TestContinueMode:
    async def test_one_invalid_transition_among_three_ends_the_batch_partial(self, db):
        disposition = await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert disposition is Disposition.ACK
        state = stored_state(db)
        assert state.status is BatchStatus.PARTIAL
        assert (state.completed, state.failed, state.skipped) == (2, 1, 0)
        assert order_status(db, 1) is OrderStatus.ACCEPTED
        assert order_status(db, 2) is OrderStatus.PENDING
        assert db.orders[3].notes == "call before arriving"

    async def test_each_operation_and_the_completion_are_published_in_order(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert routing_keys(db) == [
            "operation.order_update.succeeded",
            "operation.order_update.failed",
            "operation.order_update.succeeded",
            "batch.order_update.partial",
        ]
        assert {m.exchange for m in db.outbox} == {RESULTS_EXCHANGE}
        assert [m.message_id for m in operation_messages(db)] == [
            operation_event_id(BATCH_ID, i) for i in range(3)
        ]
        assert batch_messages(db)[0].message_id == completion_event_id(BATCH_ID)

    async def test_the_correlation_id_is_echoed_on_every_event(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH), correlation_id="c-42"))

        assert {m.correlation_id for m in db.outbox} == {"c-42"}
        assert {e.correlation_id for e in operation_events(db)} == {"c-42"}
        assert the_completion(db).correlation_id == "c-42"

    async def test_the_completion_carries_counters_rates_and_every_result(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        completion = the_completion(db)
        assert completion.event_id == completion_event_id(BATCH_ID)
        assert completion.status is BatchStatus.PARTIAL
        assert (
            completion.total_operations,
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        ) == (3, 2, 1, 0)
        assert (completion.success_rate, completion.progress) == (66.67, 100.0)
        assert [r.index for r in completion.results] == [0, 1, 2]
        assert completion.results == operation_events(db)
        assert completion.started_at is not None
        assert completion.started_at <= completion.completed_at
        assert completion.duration_seconds is not None
        assert completion.duration_seconds > 0

    async def test_a_successful_operation_reports_the_order_as_it_is_afterwards(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        accepted = result_of(the_completion(db), 0)
        assert (accepted.success, accepted.status, accepted.outcome) == (
            True,
            200,
            Outcome.SUCCEEDED,
        )
        assert accepted.error is None
        assert accepted.data is not None
        assert accepted.data["id"] == 1
        assert accepted.data["status"] == "accepted"
        assert accepted.data["price"] == "100.00"

    async def test_a_failed_operation_reports_its_code_and_no_data(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        failed = result_of(the_completion(db), 1)
        assert (failed.success, failed.status, failed.outcome) == (False, 409, Outcome.FAILED)
        assert failed.error is not None
        assert failed.error.code is ErrorCode.CONFLICT
        assert failed.error.type == "ConflictError"
        assert "pending" in failed.error.message
        assert "data" not in json.loads(operation_messages(db)[1].body)

    async def test_the_completion_is_also_sent_to_reply_to_when_asked(self, db):
        await executor_for(db).handle(
            delivery(batch_body(PARTIAL_BATCH), correlation_id="ask-7", reply_to="reply-queue")
        )

        published, reply = batch_messages(db)[0], db.outbox[-1]
        assert (reply.exchange, reply.routing_key) == ("", "reply-queue")
        assert reply.correlation_id == "ask-7"
        assert reply.body == published.body
        assert reply.message_id == published.message_id == completion_event_id(BATCH_ID)
        assert reply.mandatory is False, "a vanished reply queue must not fail the relay"

    async def test_no_reply_copy_is_made_when_none_was_asked_for(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert [m for m in db.outbox if m.exchange == ""] == []

    async def test_a_batch_whose_operations_all_succeed_is_completed(self, db):
        await executor_for(db).handle(delivery(batch_body([ACCEPT_1, NOTES_3])))

        assert the_completion(db).status is BatchStatus.COMPLETED
        assert routing_keys(db)[-1] == "batch.order_update.completed"

    async def test_a_batch_whose_operations_all_fail_is_failed(self, db):
        await executor_for(db).handle(delivery(batch_body([ACCEPT_1, NOTES_3], actor_id=4)))

        completion = the_completion(db)
        assert completion.status is BatchStatus.FAILED
        assert completion.success_rate == 0.0
        assert routing_keys(db)[-1] == "batch.order_update.failed"

    async def test_what_a_failing_handler_wrote_before_failing_is_rolled_back(self, db):
        handler = ScriptedHandler({1: [PermissionDenied("refused after the write")]}, after=True)
        await executor_for(db, handler).handle(delivery(batch_body([ACCEPT_1, NOTES_3])))

        assert outcomes(db)[0] == (0, Outcome.FAILED, 403, "PERMISSION_DENIED")
        assert untouched(db, 1), "the failed operation's write was committed with its result"
        assert db.orders[3].notes == "call before arriving"

    @pytest.mark.parametrize(
        ("operation", "actor_id", "code"),
        [
            ({"method": "PATCH", "resource_id": 999, "data": {"notes": "x"}}, ADMIN, "NOT_FOUND"),
            ({"method": "DELETE", "resource_id": 1, "data": {}}, ADMIN, "METHOD_NOT_ALLOWED"),
            ({"method": "PATCH", "resource_id": 1, "data": {"tip": 5}}, ADMIN, "VALIDATION_ERROR"),
            (ACCEPT_1, 99, "PERMISSION_DENIED"),
            (ACCEPT_1, 3, "PERMISSION_DENIED"),  # a client of another order
        ],
        ids=["missing order", "wrong method", "unknown field", "unknown actor", "not a party"],
    )
    async def test_each_expected_failure_is_reported_with_its_code(
        self, db, operation, actor_id, code
    ):
        await executor_for(db).handle(delivery(batch_body([operation], actor_id=actor_id)))

        [(_, outcome, status, error_code)] = outcomes(db)
        assert (outcome, error_code) == (Outcome.FAILED, code)
        assert status == ErrorCode(code).status
        assert untouched(db, 1)


class TestCustomHandler:
    async def test_a_custom_batch_runs_its_registered_handler_and_is_routed_as_custom(self, db):
        seen: list[int] = []

        async def reindex(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
            seen.append(operation.resource_id)
            return {"id": operation.resource_id, "reindexed": True}

        body = json.loads(batch_body([ACCEPT_1, NOTES_3]))
        body |= {"operation_type": "custom", "handler": "acme.reindex"}
        executor = executor_for(db, custom_handlers={"acme.reindex": reindex})

        disposition = await executor.handle(delivery(json.dumps(body).encode()))

        assert disposition is Disposition.ACK
        assert seen == [1, 3]
        assert routing_keys(db) == [
            "operation.custom.succeeded",
            "operation.custom.succeeded",
            "batch.custom.completed",
        ]
        assert the_completion(db).results[1].data == {"id": 3, "reindexed": True}


# -- stop_on_error -----------------------------------------------------------------------------


class TestStopOnError:
    async def test_operations_after_the_first_failure_are_skipped(self, db):
        body = batch_body(PARTIAL_BATCH, mode=Mode.STOP_ON_ERROR)
        disposition = await executor_for(db).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert outcomes(db) == [
            (0, Outcome.SUCCEEDED, 200, None),
            (1, Outcome.FAILED, 409, "CONFLICT"),
            (2, Outcome.SKIPPED, 424, "SKIPPED"),
        ]
        assert untouched(db, 3), "a skipped operation must not run"
        assert order_status(db, 1) is OrderStatus.ACCEPTED, "what ran before the failure stays"

    async def test_a_skipped_operation_is_published_as_skipped_and_says_why(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH, mode=Mode.STOP_ON_ERROR)))

        assert routing_keys(db) == [
            "operation.order_update.succeeded",
            "operation.order_update.failed",
            "operation.order_update.skipped",
            "batch.order_update.partial",
        ]
        skipped = result_of(the_completion(db), 2)
        assert (skipped.success, skipped.status) == (False, 424)
        assert skipped.error is not None
        assert skipped.error.code is ErrorCode.SKIPPED
        assert "operation 1 failed" in skipped.error.message

    async def test_the_completion_counts_the_skipped_operations(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH, mode=Mode.STOP_ON_ERROR)))

        completion = the_completion(db)
        assert completion.status is BatchStatus.PARTIAL
        assert (
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        ) == (1, 1, 1)
        assert (completion.success_rate, completion.progress) == (33.33, 100.0)

    async def test_a_first_operation_failing_skips_everything_and_fails_the_batch(self, db):
        body = batch_body([COMPLETE_2, ACCEPT_1, NOTES_3], mode=Mode.STOP_ON_ERROR)
        await executor_for(db).handle(delivery(body))

        assert [o for _, o, _, _ in outcomes(db)] == [
            Outcome.FAILED,
            Outcome.SKIPPED,
            Outcome.SKIPPED,
        ]
        assert the_completion(db).status is BatchStatus.FAILED
        assert untouched(db, 1, 2, 3)


# -- atomic ------------------------------------------------------------------------------------


class TestAtomic:
    async def test_a_failure_rolls_every_operation_back(self, db):
        body = batch_body(PARTIAL_BATCH, mode=Mode.ATOMIC)
        disposition = await executor_for(db).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert untouched(db, 1, 2, 3), "an atomic batch with a failure must leave no effect"
        assert stored_state(db).status is BatchStatus.FAILED

    async def test_the_failing_operation_has_its_own_error_and_the_others_are_skipped(self, db):
        await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH, mode=Mode.ATOMIC)))

        assert outcomes(db) == [
            (0, Outcome.SKIPPED, 424, "SKIPPED"),
            (1, Outcome.FAILED, 409, "CONFLICT"),
            (2, Outcome.SKIPPED, 424, "SKIPPED"),
        ]
        completion = the_completion(db)
        assert completion.status is BatchStatus.FAILED
        assert (
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        ) == (0, 1, 2)
        rolled_back = result_of(completion, 0)
        assert rolled_back.error is not None
        assert "rolled back" in rolled_back.error.message
        assert "data" not in json.loads(operation_messages(db)[0].body)
        assert routing_keys(db) == [
            "operation.order_update.skipped",
            "operation.order_update.failed",
            "operation.order_update.skipped",
            "batch.order_update.failed",
        ]

    async def test_a_successful_atomic_batch_commits_everything_together(self, db):
        start_1 = {"method": "PATCH", "resource_id": 1, "data": {"status": "in_progress"}}
        body = batch_body([ACCEPT_1, start_1, NOTES_3], mode=Mode.ATOMIC)
        await executor_for(db).handle(delivery(body))

        assert the_completion(db).status is BatchStatus.COMPLETED
        assert order_status(db, 1) is OrderStatus.IN_PROGRESS, "op 1 must see op 0's change"
        assert db.orders[3].notes == "call before arriving"
        assert [r.data["status"] for r in the_completion(db).results if r.data] == [
            "accepted",
            "in_progress",
            "pending",
        ]

    async def test_an_unexpected_error_rolls_back_and_reports_internal_error(self, db):
        handler = ScriptedHandler({3: [ValueError("disk full at /var/lib/secret")]}, after=True)
        body = batch_body([ACCEPT_1, NOTES_3], mode=Mode.ATOMIC)
        with capture_logs():
            await executor_for(db, handler).handle(delivery(body))

        assert untouched(db, 1, 3)
        assert outcomes(db) == [
            (0, Outcome.SKIPPED, 424, "SKIPPED"),
            (1, Outcome.FAILED, 500, "INTERNAL_ERROR"),
        ]
        crashed = result_of(the_completion(db), 1)
        assert crashed.error is not None
        assert "secret" not in crashed.error.message
        assert crashed.error.type == "InternalError", "never an internal class name"
