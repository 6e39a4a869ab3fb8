"""BatchExecutor on the in-memory unit of work: modes, idempotency, crashes, faults."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from structlog.testing import capture_logs

from consumer.domain.batch import BatchState
from consumer.domain.errors import PermissionDenied
from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS, OperationContext, OperationHandler
from consumer.service_layer.intake import Delivery, IntakePolicy, fingerprint
from consumer.service_layer.retry import RetryPolicy
from consumer.service_layer.unit_of_work import DuplicateResult, OutboxMessage, StoredBatch
from contracts import (
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    BatchCompleted,
    BatchRejected,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Mode,
    Operation,
    OperationResult,
    Outcome,
    Topology,
    completion_event_id,
    operation_event_id,
)
from tests.unit.fakes import (
    FakeDatabase,
    FakeUnitOfWork,
    ResultRow,
    TransientFault,
    demo_marketplace,
    transactions_for,
)

BATCH_ID = UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10")
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
RETRY = RetryPolicy(attempts=3, base_seconds=0.0001, max_seconds=0.0005)
DELIVERY_LIMIT = 5
ADMIN = 1
RESULTS_EXCHANGE = "batchops.results"

# order i of the demo marketplace: client 3 + i % 3, professional user 6 + i % 3, pending.
ACCEPT_1 = {"method": "PATCH", "resource_id": 1, "data": {"status": "accepted"}}
COMPLETE_2 = {"method": "PATCH", "resource_id": 2, "data": {"status": "completed"}}  # 409
NOTES_3 = {"method": "PATCH", "resource_id": 3, "data": {"notes": "call before arriving"}}
PARTIAL_BATCH = [ACCEPT_1, COMPLETE_2, NOTES_3]


class ConsumerCrash(BaseException):
    """The process dying mid-operation: not an Exception, so nothing in the executor catches it
    and the message is left to redelivery, exactly like a kill -9."""


class Clock:
    """Each reading is one millisecond after the previous one."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@dataclass
class ScriptedHandler:
    """The real order_update handler, with scripted exceptions for chosen orders.

    `faults[resource_id]` are raised one per call, in turn, before the real handler runs (or
    after it has staged its change, with `after=True`); once they run out it behaves normally.
    """

    faults: dict[int, list[BaseException]] = field(default_factory=dict)
    after: bool = False
    calls: Counter[int] = field(default_factory=Counter)
    on_call: Callable[[Operation], None] | None = None

    async def __call__(self, ctx: OperationContext, operation: Operation) -> dict[str, Any]:
        self.calls[operation.resource_id] += 1
        if self.on_call is not None:
            self.on_call(operation)
        pending = self.faults.get(operation.resource_id)
        if pending and not self.after:
            raise pending.pop(0)
        data = await HANDLERS["order_update"](ctx, operation)
        if pending and self.after:
            raise pending.pop(0)
        return data


def executor_for(
    db: FakeDatabase,
    handler: OperationHandler | None = None,
    *,
    custom_handlers: dict[str, OperationHandler] | None = None,
    delivery_limit: int = DELIVERY_LIMIT,
    retry: RetryPolicy = RETRY,
    max_operations: int = MAX_OPERATIONS,
) -> BatchExecutor:
    handlers = dict(HANDLERS) if handler is None else {"order_update": handler}
    custom = custom_handlers or {}
    return BatchExecutor(
        transactions_for(db, retry),
        handlers,
        custom,
        IntakePolicy(
            max_body_bytes=MAX_BODY_BYTES,
            max_operations=max_operations,
            allowed_publishers=frozenset(),
            operation_types=frozenset(handlers) | {"custom"},
            custom_handlers=frozenset(custom),
        ),
        EventFactory(Topology()),
        delivery_limit=delivery_limit,
        clock=Clock(),
    )


def batch_body(
    operations: list[dict[str, Any]], *, mode: Mode = Mode.CONTINUE, actor_id: int = ADMIN
) -> bytes:
    return json.dumps(
        {
            "batch_id": str(BATCH_ID),
            "operation_type": "order_update",
            "actor_id": actor_id,
            "mode": mode.value,
            "operations": operations,
        }
    ).encode()


def delivery(
    body: bytes,
    *,
    delivery_count: int = 0,
    correlation_id: str | None = "corr-1",
    reply_to: str | None = None,
    dead_lettered: bool = False,
    give_up: bool = False,
) -> Delivery:
    return Delivery(
        body=body,
        user_id="producer",
        correlation_id=correlation_id,
        reply_to=reply_to,
        content_type="application/json",
        delivery_count=delivery_count,
        dead_lettered=dead_lettered,
        give_up=give_up,
    )


def announcement(body: bytes) -> OutboxMessage:
    """An event's outbox row, as the executor would queue it with a result."""
    return OutboxMessage("results", "operation.order_update.succeeded", uuid4(), None, body)


# -- reading the outcome back -------------------------------------------------------------------


def routing_keys(db: FakeDatabase) -> list[str]:
    return [message.routing_key for message in db.outbox]


def operation_messages(db: FakeDatabase) -> list[OutboxMessage]:
    return [m for m in db.outbox if m.routing_key.startswith("operation.")]


def batch_messages(db: FakeDatabase) -> list[OutboxMessage]:
    return [m for m in db.outbox if m.routing_key.startswith("batch.")]


def operation_events(db: FakeDatabase) -> list[OperationResult]:
    return [OperationResult.model_validate_json(m.body) for m in operation_messages(db)]


def the_completion(db: FakeDatabase) -> BatchCompleted:
    messages = batch_messages(db)
    assert len(messages) == 1, f"expected one completion, the outbox has {routing_keys(db)}"
    return BatchCompleted.model_validate_json(messages[0].body)


def stored_state(db: FakeDatabase) -> BatchState:
    assert BATCH_ID in db.batches, "the batch was never recorded"
    return db.batches[BATCH_ID].state


def outcomes(db: FakeDatabase) -> list[tuple[int, Outcome, int, str | None]]:
    return [(r.index, r.outcome, r.status, r.error_code) for r in db.results_of(BATCH_ID)]


def an_event(index: int, *, resource_id: int, correlation_id: str = "corr-1") -> bytes:
    """The body of a success event as a consumer would have committed it."""
    return (
        OperationResult(
            event_id=operation_event_id(BATCH_ID, index),
            batch_id=BATCH_ID,
            correlation_id=correlation_id,
            operation_type="order_update",
            index=index,
            resource_id=resource_id,
            status=200,
            success=True,
            outcome=Outcome.SUCCEEDED,
            data={"id": resource_id, "status": "accepted"},
            occurred_at=T0,
        )
        .model_dump_json()
        .encode()
    )


def result_of(completion: BatchCompleted, index: int) -> OperationResult:
    return next(result for result in completion.results if result.index == index)


def order_status(db: FakeDatabase, order_id: int) -> OrderStatus:
    return db.orders[order_id].status


def untouched(db: FakeDatabase, *order_ids: int) -> bool:
    fresh = demo_marketplace()
    return all(db.orders[i] == fresh.orders[i] for i in order_ids)


@pytest.fixture
def db() -> FakeDatabase:
    return demo_marketplace()


# -- the fake itself: it must behave like the database it stands for ---------------------------


class TestFakeUnitOfWork:
    async def test_staged_changes_are_visible_only_after_commit(self, db):
        async with FakeUnitOfWork(db) as uow:
            order = await uow.marketplace.get_order_for_update(1)
            assert order is not None
            order.status = OrderStatus.ACCEPTED
            await uow.marketplace.save_order(order)
            assert order_status(db, 1) is OrderStatus.PENDING
            await uow.commit()
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_leaving_without_commit_rolls_back(self, db):
        async with FakeUnitOfWork(db) as uow:
            order = await uow.marketplace.get_order_for_update(1)
            assert order is not None
            order.notes = "lost"
            await uow.marketplace.save_order(order)
        assert untouched(db, 1)

    async def test_a_second_result_for_an_index_is_a_duplicate(self, db):
        async with FakeUnitOfWork(db) as uow:
            await uow.batches.claim(
                StoredBatch(
                    BatchState(BATCH_ID, "order_update", ADMIN, Mode.CONTINUE, 2, T0),
                    None,
                    b"",
                    None,
                    None,
                )
            )
            await uow.batches.add_result(
                BATCH_ID, 0, 1, Outcome.SUCCEEDED, 200, None, b"{}", announcement(b"{}")
            )
            await uow.commit()
        async with FakeUnitOfWork(db) as uow:
            with pytest.raises(DuplicateResult):
                await uow.batches.add_result(
                    BATCH_ID, 0, 1, Outcome.FAILED, 409, "CONFLICT", b"", announcement(b"")
                )
        assert stored_state(db).completed == 1


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
                    BATCH_ID, 0, 1, Outcome.SUCCEEDED, 200, None, theirs, announcement(theirs)
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


# -- idempotent batch_id ------------------------------------------------------------------------


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


# -- faults ------------------------------------------------------------------------------------


class TestUnexpectedError:
    async def test_an_unexpected_exception_is_internal_error_without_its_text(self, db):
        leak = "password=hunter2 host=db.internal"
        handler = ScriptedHandler({1: [ValueError(leak)]})

        with capture_logs() as logs:
            await executor_for(db, handler).handle(delivery(batch_body(PARTIAL_BATCH)))

        crashed = result_of(the_completion(db), 0)
        assert (crashed.status, crashed.outcome) == (500, Outcome.FAILED)
        assert crashed.error is not None
        assert crashed.error.code is ErrorCode.INTERNAL_ERROR
        assert "hunter2" not in crashed.error.message, "internals leaked into the event"
        assert "hunter2" not in operation_messages(db)[0].body.decode()
        assert any(log["event"] == "operation_crashed" and log.get("exc_info") for log in logs), (
            f"the crash must be logged with its traceback: {logs}"
        )

    async def test_an_unexpected_exception_is_not_retried_and_the_batch_goes_on(self, db):
        handler = ScriptedHandler({1: [ValueError("boom")]})
        with capture_logs():
            await executor_for(db, handler).handle(delivery(batch_body([ACCEPT_1, NOTES_3])))

        assert handler.calls[1] == 1
        assert [o for _, o, _, _ in outcomes(db)] == [Outcome.FAILED, Outcome.SUCCEEDED]
        assert the_completion(db).status is BatchStatus.PARTIAL

    async def test_what_the_handler_wrote_before_crashing_is_rolled_back(self, db):
        handler = ScriptedHandler({1: [ValueError("after the write")]}, after=True)
        with capture_logs():
            await executor_for(db, handler).handle(delivery(batch_body([ACCEPT_1])))

        assert untouched(db, 1)


class TestTransientFault:
    async def test_a_transient_fault_is_retried_and_the_operation_succeeds(self, db):
        handler = ScriptedHandler({1: [TransientFault("deadlock detected")]}, after=True)

        with capture_logs() as logs:
            await executor_for(db, handler).handle(delivery(batch_body([ACCEPT_1, NOTES_3])))

        assert handler.calls[1] == 2
        assert outcomes(db)[0] == (0, Outcome.SUCCEEDED, 200, None)
        assert order_status(db, 1) is OrderStatus.ACCEPTED
        assert the_completion(db).status is BatchStatus.COMPLETED
        assert [log["event"] for log in logs].count("transaction_retrying") == 1

    async def test_a_transient_fault_that_persists_is_unavailable(self, db):
        faults: list[BaseException] = [TransientFault("connection reset") for _ in range(10)]
        handler = ScriptedHandler({1: faults}, after=True)

        with capture_logs():
            await executor_for(db, handler).handle(delivery(batch_body([ACCEPT_1, NOTES_3])))

        assert handler.calls[1] == RETRY.attempts
        unavailable = result_of(the_completion(db), 0)
        assert (unavailable.status, unavailable.outcome) == (503, Outcome.FAILED)
        assert unavailable.error is not None
        assert unavailable.error.code is ErrorCode.UNAVAILABLE
        assert "connection reset" not in unavailable.error.message
        assert untouched(db, 1), "no attempt may leave its effect behind"
        assert db.orders[3].notes == "call before arriving", "the next operation still runs"
        assert the_completion(db).status is BatchStatus.PARTIAL

    async def test_an_atomic_batch_is_retried_whole_after_a_transient_fault(self, db):
        handler = ScriptedHandler({3: [TransientFault("deadlock detected")]}, after=True)
        body = batch_body([ACCEPT_1, NOTES_3], mode=Mode.ATOMIC)

        with capture_logs():
            disposition = await executor_for(db, handler).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert handler.calls == Counter({1: 2, 3: 2}), "the whole transaction runs again"
        assert the_completion(db).status is BatchStatus.COMPLETED
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_an_atomic_batch_whose_transient_fault_persists_is_unavailable(self, db):
        faults: list[BaseException] = [TransientFault("connection reset") for _ in range(10)]
        handler = ScriptedHandler({3: faults}, after=True)
        body = batch_body([ACCEPT_1, NOTES_3], mode=Mode.ATOMIC)

        with capture_logs():
            disposition = await executor_for(db, handler).handle(delivery(body))

        assert disposition is Disposition.ACK
        assert [(i, code) for i, _, _, code in outcomes(db)] == [
            (0, "SKIPPED"),
            (1, "UNAVAILABLE"),
        ]
        assert untouched(db, 1, 3)


class TestDatabaseOutage:
    """While no connection can be made, batches wait; nothing fails and nothing is given up."""

    async def test_a_batch_taken_during_an_outage_waits_for_the_database_then_runs_normally(
        self, db
    ):
        db.down = True
        executor = executor_for(db)
        with capture_logs() as logs:
            handling = asyncio.create_task(
                executor.handle(delivery(batch_body([ACCEPT_1, NOTES_3])))
            )
            await outage_begun(executor)
            assert not handling.done(), "the batch must wait, not fail"
            db.down = False
            disposition = await asyncio.wait_for(handling, 5)

        assert disposition is Disposition.ACK
        assert the_completion(db).status is BatchStatus.COMPLETED
        assert [log["event"] for log in logs].count("database_unreachable") == 1

    async def test_an_outage_between_two_operations_resumes_at_the_next_one(self, db):
        executor = executor_for(db, ScriptedHandler(on_call=lambda op: outage_after(db, op)))
        with capture_logs():
            handling = asyncio.create_task(
                executor.handle(delivery(batch_body([ACCEPT_1, NOTES_3])))
            )
            await outage_begun(executor)
            db.down = False
            await asyncio.wait_for(handling, 5)

        assert [o for _, o, _, _ in outcomes(db)] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_an_outage_longer_than_the_retry_time_mid_atomic_batch_fails_nothing(self, db):
        """The atomic transaction's connection dies in the outage; the whole transaction runs
        again afterwards, with the full retry time: waiting out the outage spent none of it."""
        tight = RetryPolicy(timeout_seconds=0.05, base_seconds=0.001, max_seconds=0.002)
        handler = ScriptedHandler(on_call=lambda op: outage_after(db, op))
        executor = executor_for(db, handler, retry=tight)
        body = batch_body([ACCEPT_1, NOTES_3], mode=Mode.ATOMIC)
        with capture_logs():
            handling = asyncio.create_task(executor.handle(delivery(body)))
            await outage_begun(executor)
            await asyncio.sleep(0.2)  # four times the retry time
            db.down = False
            await asyncio.wait_for(handling, 5)

        assert [(o, code) for _, o, _, code in outcomes(db)] == [
            (Outcome.SUCCEEDED, None),
            (Outcome.SUCCEEDED, None),
        ]
        assert order_status(db, 1) is OrderStatus.ACCEPTED

    async def test_shutdown_during_an_outage_leaves_the_batch_for_redelivery(self, db):
        db.down = True
        executor = executor_for(db)
        with capture_logs():
            handling = asyncio.create_task(executor.handle(delivery(batch_body([ACCEPT_1]))))
            await outage_begun(executor)
            executor._tx.availability.close()
            with pytest.raises(Interrupted):
                await asyncio.wait_for(handling, 5)

        assert db.results_of(BATCH_ID) == []


def outage_after(db: FakeDatabase, operation: Operation) -> None:
    """The database goes away while operation 0 runs: its commit still lands (the unit of work
    is already connected), the next operation finds no database."""
    if operation.resource_id == 1 and db.outages == 0:
        db.go_down()


async def outage_begun(executor: BatchExecutor) -> None:
    await asyncio.wait_for(executor._tx.availability.changed(True), 5)
