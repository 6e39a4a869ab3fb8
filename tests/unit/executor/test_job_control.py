"""Job control on the in-memory unit of work: cancel in every phase, dry runs, retries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.domain.batch import BatchState
from consumer.domain.model import Actor, OrderStatus, Role
from consumer.service_layer.events import EventFactory
from consumer.service_layer.handlers import HANDLERS, OperationContext
from consumer.service_layer.intake import fingerprint
from consumer.service_layer.job_control import JobControl, Refused, Verdict
from consumer.service_layer.unit_of_work import StoredBatch
from contracts import (
    BatchCompleted,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Mode,
    Operation,
    Outcome,
    Topology,
)
from tests.unit.executor.helpers import (
    ACCEPT_1,
    BATCH_ID,
    COMPLETE_2,
    NOTES_3,
    PARTIAL_BATCH,
    T0,
    batch_body,
    delivery,
    executor_for,
    order_status,
    outcomes,
    routing_keys,
    untouched,
)
from tests.unit.fakes import FakeDatabase, transactions_for

ADMIN = Actor(1, Role.ADMIN, is_active=True)
CLIENT_3 = Actor(3, Role.CLIENT, is_active=True)
START_1 = {"method": "PATCH", "resource_id": 1, "data": {"status": "in_progress"}}
CANCELLED = "not executed: the batch was cancelled"


def control_for(db: FakeDatabase) -> JobControl:
    return JobControl(transactions_for(db), EventFactory(Topology()))


def completions(db: FakeDatabase) -> list[tuple[str, BatchCompleted]]:
    return [
        (m.routing_key, BatchCompleted.model_validate_json(m.body))
        for m in db.outbox
        if not m.routing_key.startswith("operation.")
    ]


def cancelled_codes(db: FakeDatabase) -> list[tuple[Outcome, str | None]]:
    return [(outcome, code) for _, outcome, _, code in outcomes(db)]


@dataclass
class CancellingHandler:
    """The real order_update handler; on the operation of `at_resource` it first commits a
    cancel of the batch, as an operator would at that moment from elsewhere."""

    control: JobControl
    at_resource: int
    calls: list[int] = field(default_factory=list)

    async def __call__(self, ctx: OperationContext, operation: Operation) -> dict[str, Any]:
        self.calls.append(operation.resource_id)
        if operation.resource_id == self.at_resource and self.calls.count(self.at_resource) == 1:
            assert await self.control.cancel(BATCH_ID, None) is Verdict.ACCEPTED
        return await HANDLERS["order_update"](ctx, operation)


class TestCancelBeforeAnyConsumer:
    async def test_a_batch_cancelled_in_advance_runs_nothing_when_its_request_arrives(self, db):
        assert await control_for(db).cancel(BATCH_ID, ADMIN) is Verdict.ACCEPTED

        with capture_logs():
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert cancelled_codes(db) == [(Outcome.SKIPPED, "SKIPPED")] * 3
        ((key, completion),) = completions(db)
        assert key == "batch.order_update.cancelled"
        assert completion.status is BatchStatus.CANCELLED
        assert all(CANCELLED in r.error.message for r in completion.results if r.error)
        assert untouched(db, 1, 2, 3)

    async def test_a_client_may_not_cancel_a_batch_nobody_has_seen(self, db):
        assert await control_for(db).cancel(BATCH_ID, CLIENT_3) is Verdict.NOT_FOUND
        assert BATCH_ID not in db.batches

    async def test_a_pending_http_batch_ends_cancelled_at_once_and_its_request_runs_nothing(
        self, db
    ):
        request = BatchRequest.model_validate_json(batch_body(PARTIAL_BATCH))
        db.batches[BATCH_ID] = pending(request)

        with capture_logs():
            assert await control_for(db).cancel(BATCH_ID, ADMIN) is Verdict.ACCEPTED
            assert db.batches[BATCH_ID].state.status is BatchStatus.CANCELLED
            assert routing_keys(db)[-1] == "batch.order_update.cancelled"
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert cancelled_codes(db) == [(Outcome.SKIPPED, "SKIPPED")] * 3
        assert routing_keys(db)[-1] == "batch.order_update.cancelled", "resent, not run"
        assert untouched(db, 1, 2, 3)


class TestCancelWhileRunning:
    async def test_the_operation_in_hand_is_rolled_back_and_the_rest_skipped(self, db):
        handler = CancellingHandler(control_for(db), at_resource=2)
        with capture_logs():
            await executor_for(db, handler).handle(delivery(batch_body(PARTIAL_BATCH)))

        assert cancelled_codes(db) == [
            (Outcome.SUCCEEDED, None),
            (Outcome.SKIPPED, "SKIPPED"),
            (Outcome.SKIPPED, "SKIPPED"),
        ]
        assert order_status(db, 1) is OrderStatus.ACCEPTED, "what committed before stays"
        assert untouched(db, 3), "nothing runs after the cancel"
        assert db.batches[BATCH_ID].state.status is BatchStatus.CANCELLED
        assert routing_keys(db)[-1] == "batch.order_update.cancelled"

    async def test_an_atomic_batch_cancelled_mid_run_is_rolled_back_whole(self, db):
        handler = CancellingHandler(control_for(db), at_resource=3)
        body = batch_body([ACCEPT_1, NOTES_3], mode=Mode.ATOMIC)
        with capture_logs():
            await executor_for(db, handler).handle(delivery(body))

        assert cancelled_codes(db) == [(Outcome.SKIPPED, "SKIPPED")] * 2
        assert untouched(db, 1, 3)
        assert db.batches[BATCH_ID].state.status is BatchStatus.CANCELLED


class TestCancelRefused:
    async def test_a_finished_batch_cannot_be_cancelled_and_nothing_changes(self, db):
        with capture_logs():
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))
        before = (len(db.outbox), db.batches[BATCH_ID].state.status)

        assert await control_for(db).cancel(BATCH_ID, ADMIN) is Verdict.REFUSED
        assert (len(db.outbox), db.batches[BATCH_ID].state.status) == before

    async def test_a_batch_whose_every_operation_ran_is_only_finishing(self, db):
        db.batches[BATCH_ID] = processing(total=1, completed=1)
        assert await control_for(db).cancel(BATCH_ID, ADMIN) is Verdict.REFUSED
        assert not db.batches[BATCH_ID].state.cancel_requested

    async def test_only_the_owner_or_the_back_office_may_cancel(self, db):
        db.batches[BATCH_ID] = processing(total=2, actor_id=4)
        assert await control_for(db).cancel(BATCH_ID, CLIENT_3) is Verdict.NOT_FOUND
        assert not db.batches[BATCH_ID].state.cancel_requested
        owner = Actor(4, Role.CLIENT, is_active=True)
        assert await control_for(db).cancel(BATCH_ID, owner) is Verdict.ACCEPTED
        assert db.batches[BATCH_ID].state.cancel_requested


class TestDryRun:
    @pytest.mark.parametrize("mode", list(Mode))
    async def test_a_dry_run_changes_nothing_and_says_what_would_have_happened(self, db, mode):
        body = dry_run_body([ACCEPT_1, START_1, COMPLETE_2, NOTES_3], mode)
        with capture_logs():
            await executor_for(db).handle(delivery(body))

        assert untouched(db, 1, 2, 3)
        ((key, completion),) = completions(db)
        assert completion.dry_run
        assert key == f"dryrun.order_update.{completion.status.value}"
        assert not [k for k in routing_keys(db) if k.startswith(("operation.", "batch."))]
        expected = {
            # the second operation sees the first one's effect: accepted -> in_progress
            Mode.CONTINUE: ["succeeded", "succeeded", "failed", "succeeded"],
            Mode.STOP_ON_ERROR: ["succeeded", "succeeded", "failed", "skipped"],
            Mode.ATOMIC: ["skipped", "skipped", "failed", "skipped"],
        }[mode]
        assert [r.outcome.value for r in completion.results] == expected
        assert completion.results[2].error is not None
        assert completion.results[2].error.code is ErrorCode.CONFLICT

    async def test_a_dry_run_is_stored_as_one(self, db):
        with capture_logs():
            await executor_for(db).handle(delivery(dry_run_body([ACCEPT_1], Mode.CONTINUE)))
        assert db.batches[BATCH_ID].state.dry_run


class TestRetry:
    async def test_a_retry_runs_again_exactly_what_did_not_succeed_in_order(self, db):
        with capture_logs():
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))

        retry = await control_for(db).retry_request(BATCH_ID, ADMIN)

        assert retry.batch_id != BATCH_ID
        assert retry.retry_of == BATCH_ID
        assert [op.resource_id for op in retry.operations] == [2]
        assert (retry.operation_type, retry.actor_id, retry.mode) == (
            BatchRequest.model_validate_json(batch_body(PARTIAL_BATCH)).operation_type,
            1,
            Mode.CONTINUE,
        )

    async def test_a_retry_echoes_retry_of_in_its_events(self, db):
        with capture_logs():
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))
            retry = await control_for(db).retry_request(BATCH_ID, ADMIN)
            await executor_for(db).handle(delivery(retry.model_dump_json().encode()))

        mine = [c for _, c in completions(db) if c.batch_id == retry.batch_id]
        assert mine[0].retry_of == BATCH_ID
        assert all(r.retry_of == BATCH_ID for r in mine[0].results)

    @pytest.mark.parametrize(
        ("operations", "dry_run"),
        [([ACCEPT_1], False), ([ACCEPT_1], True)],
        ids=["completed", "dry run"],
    )
    async def test_a_completed_batch_or_a_dry_run_cannot_be_retried(self, db, operations, dry_run):
        body = dry_run_body(operations, Mode.CONTINUE) if dry_run else batch_body(operations)
        with capture_logs():
            await executor_for(db).handle(delivery(body))
        with pytest.raises(Refused) as refused:
            await control_for(db).retry_request(BATCH_ID, ADMIN)
        assert refused.value.verdict is Verdict.REFUSED

    async def test_a_batch_still_running_cannot_be_retried(self, db):
        db.batches[BATCH_ID] = processing(total=2)
        with pytest.raises(Refused, match="processing"):
            await control_for(db).retry_request(BATCH_ID, ADMIN)

    async def test_a_stranger_is_told_it_does_not_exist(self, db):
        with capture_logs():
            await executor_for(db).handle(delivery(batch_body(PARTIAL_BATCH)))
        with pytest.raises(Refused) as refused:
            await control_for(db).retry_request(BATCH_ID, CLIENT_3)
        assert refused.value.verdict is Verdict.NOT_FOUND


def dry_run_body(operations: list[dict[str, Any]], mode: Mode) -> bytes:
    body = json.loads(batch_body(operations, mode=mode))
    return json.dumps({**body, "dry_run": True}).encode()


def pending(request: BatchRequest) -> StoredBatch:
    """A batch the HTTP API stored before publishing it."""
    state = BatchState(
        batch_id=request.batch_id,
        operation_type=request.operation_type.value,
        actor_id=request.actor_id,
        mode=request.mode,
        total=len(request.operations),
        created_at=T0,
    )
    return StoredBatch(
        state,
        None,
        fingerprint(request),
        None,
        None,
        request=request.model_dump(mode="json"),
    )


def processing(*, total: int, completed: int = 0, actor_id: int = 1) -> StoredBatch:
    state = BatchState(
        batch_id=BATCH_ID,
        operation_type="order_update",
        actor_id=actor_id,
        mode=Mode.CONTINUE,
        total=total,
        created_at=T0,
        status=BatchStatus.PROCESSING,
        completed=completed,
        started_at=T0,
    )
    return StoredBatch(state, None, b"x" * 32, None, None)
