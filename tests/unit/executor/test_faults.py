"""BatchExecutor on the in-memory unit of work: unexpected errors, transient faults and database
outages."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from structlog.testing import capture_logs

from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.retry import RetryPolicy
from contracts import BatchStatus, ErrorCode, Mode, Operation, Outcome
from tests.unit.executor.helpers import (
    ACCEPT_1,
    BATCH_ID,
    NOTES_3,
    PARTIAL_BATCH,
    RETRY,
    ScriptedHandler,
    batch_body,
    delivery,
    executor_for,
    operation_messages,
    order_status,
    outcomes,
    result_of,
    the_completion,
    untouched,
)
from tests.unit.fakes import FakeDatabase, TransientFault


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
