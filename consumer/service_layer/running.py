"""Running a batch's operations: in order, one transaction each (continue, stop_on_error), or
all in one transaction (atomic). Each operation's effect commits with its result (recorder.py);
a fault is retried (retry.py), and what cannot be retried becomes the operation's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from structlog.contextvars import bound_contextvars

from consumer.domain.errors import OperationFailed
from consumer.log_config import LogThrottle
from consumer.service_layer.batch_run import BatchRun, Interrupted
from consumer.service_layer.faults import describe
from consumer.service_layer.handlers import OperationContext
from consumer.service_layer.recorder import ResultRecorder
from consumer.service_layer.retry import Transactions
from consumer.service_layer.telemetry import Telemetry
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, BatchCancelled
from contracts import ErrorCode, Mode, Operation, OperationResult, Outcome

log = structlog.get_logger(__name__)
# A fault that outlives its retries may hit every batch in flight at once: one line per
# interval, not a traceback per operation.
_unavailable_log = LogThrottle(log)


class OperationRunner:
    def __init__(
        self,
        transactions: Transactions,
        recorder: ResultRecorder,
        clock: Callable[[], datetime],
        telemetry: Telemetry,
    ) -> None:
        self._tx = transactions
        self._recorder = recorder
        self._clock = clock
        self._telemetry = telemetry
        self.stop_requested = False

    async def run(self, run: BatchRun) -> None:
        if run.state.cancel_requested:  # cancelled before it ran: nothing runs
            await self._recorder.record(run, self._recorder.cancelled(run, run.pending()))
        elif run.request.dry_run:
            await self._rehearse(run)
        elif run.request.mode is Mode.ATOMIC:
            await self._run_atomic(run)
        else:
            await self._run_in_order(run)

    # -- continue and stop_on_error: one transaction per operation ---------------------------

    async def _run_in_order(self, run: BatchRun) -> None:
        # One unit of work for the batch: each operation's commit opens the next one's
        # transaction in the same round trip (except the last's: nothing follows it).
        uow = self._tx.unit_of_work()
        try:
            pending = run.pending()
            for index, operation in pending:
                if (
                    run.request.mode is Mode.STOP_ON_ERROR
                    and Outcome.FAILED in run.outcomes.values()
                ):
                    first = min(i for i, o in run.outcomes.items() if o is Outcome.FAILED)
                    await uow.close()
                    reason = f"not executed: operation {first} failed (stop_on_error)"
                    await self._recorder.record(
                        run, self._recorder.skipped(run, run.pending(), reason)
                    )
                    return
                if self.stop_requested and run.interruptible:
                    raise Interrupted(f"stopped before operation {index}")
                chain = index != pending[-1][0]
                with bound_contextvars(index=index):
                    run.outcomes[index] = await self._execute(
                        uow, run, index, operation, chain=chain
                    )
        except BatchCancelled:
            # The operation in hand was rolled back: it and the rest are skipped.
            await uow.close()
            await self._recorder.record(run, self._recorder.cancelled(run, run.pending()))
        finally:
            await uow.close()

    async def _execute(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        index: int,
        operation: Operation,
        *,
        chain: bool,
    ) -> Outcome:
        async def attempt() -> Outcome:
            async with uow:
                now = self._clock()
                context = OperationContext(uow, run.request.actor_id, await run.actor_for(uow), now)
                try:
                    data = await run.handler(context, operation)
                    run.note_success(operation)
                    result = self._recorder.succeeded(run, index, operation, data, now)
                except OperationFailed as failure:
                    await uow.rollback()  # whatever the handler wrote before failing goes
                    result = self._recorder.failed(
                        run, index, operation, failure.code, failure.message, failure.public_type
                    )
                return await self._recorder.commit(uow, run, [result], chain=chain)

        try:
            with self._telemetry.operation_span(
                run.state.operation_type,
                index=index,
                resource_id=operation.resource_id,
                batch_id=str(run.batch_id),
            ):
                return await self._tx.retry(attempt)
        except (Interrupted, BatchCancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes this operation's result
            code, message = self._crash_report(exc)
            failure = self._recorder.failed(
                run, index, operation, code, message, type(exc).__name__
            )
            return await self._recorder.record(run, [failure])

    def _crash_report(self, exc: Exception) -> tuple[ErrorCode, str]:
        """Code and public message of an operation that raised something unexpected; the
        details go to the log only."""
        if self._tx.classify(exc).transient:
            _unavailable_log.error("operation_unavailable", error=describe(exc))
            return ErrorCode.UNAVAILABLE, "the database kept refusing it; retries ran out of time"
        log.error("operation_crashed", exc_info=exc)
        return ErrorCode.INTERNAL_ERROR, "an unexpected error occurred; it has been logged"

    # -- atomic: every operation in one transaction -----------------------------------------

    async def _run_atomic(self, run: BatchRun) -> None:
        if run.outcomes:
            return  # results of an atomic batch commit all together: it already ran
        progress = _Progress()
        try:
            await self._tx.retry(lambda: self._atomic_attempt(run, progress))
        except Interrupted:
            raise
        except BatchCancelled:  # everything it ran is rolled back with it
            await self._recorder.record(run, self._recorder.cancelled(run, run.pending()))
        except Exception as exc:  # noqa: BLE001 - transient beyond retries, or a failed commit
            code, message = self._crash_report(exc)
            results = self._recorder.rolled_back(
                run, progress.reached, code, message, type(exc).__name__
            )
            await self._recorder.record(run, results)

    async def _atomic_attempt(self, run: BatchRun, progress: _Progress) -> None:
        """One try: every operation in one transaction, then every result in it."""
        async with self._tx.unit_of_work() as uow:
            now = self._clock()
            run.actor_stale = True  # one transaction: read the actor in it
            results: list[OperationResult] = []
            try:
                for index, operation in enumerate(run.request.operations):
                    progress.reached = index
                    await self._mark_in_hand(run, index)
                    results.append(await self._atomic_operation(uow, run, index, operation, now))
            except _RollBack as rollback:
                await uow.rollback()
                results = rollback.results
            await self._recorder.commit(uow, run, results)

    async def _atomic_operation(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        index: int,
        operation: Operation,
        now: datetime,
    ) -> OperationResult:
        """One operation inside the atomic transaction: its result, or _RollBack with the
        batch's results when it failed. A transient fault escapes: the whole try is retried."""
        try:
            context = OperationContext(uow, run.request.actor_id, await run.actor_for(uow), now)
            data = await run.handler(context, operation)
            await uow.flush()  # a refused write is this operation's failure
            run.note_success(operation)
        except OperationFailed as failure:
            failed = (failure.code, failure.message, failure.public_type)
            raise _RollBack(self._recorder.rolled_back(run, index, *failed)) from None
        except Exception as exc:
            if _escapes(exc) or self._tx.classify(exc).transient:
                raise
            code, message = self._crash_report(exc)
            results = self._recorder.rolled_back(run, index, code, message, type(exc).__name__)
            raise _RollBack(results) from exc
        return self._recorder.succeeded(run, index, operation, data, now)

    async def _mark_in_hand(self, run: BatchRun, index: int) -> None:
        """Note the operation in hand, beside the atomic transaction. Not retried on its own:
        it runs inside that transaction's attempt, whose retry (or wait for the end of an
        outage) covers it; a wait of its own would spend the attempt's retry time."""
        async with self._tx.unit_of_work() as uow:
            await uow.batches.mark_in_hand(run.batch_id, index)
            await uow.commit()

    # -- dry run: every operation in one transaction that is rolled back --------------------

    async def _rehearse(self, run: BatchRun) -> None:
        if run.outcomes:
            return  # its results are recorded: it already ran
        progress = _Progress()
        try:
            results = await self._tx.retry(lambda: self._rehearsal(run, progress))
            await self._recorder.record(run, results, cancellable=True)
        except Interrupted:
            raise
        except BatchCancelled:
            await self._recorder.record(run, self._recorder.cancelled(run, run.pending()))
        except Exception as exc:  # noqa: BLE001 - transient beyond retries
            code, message = self._crash_report(exc)
            failed = (code, message, type(exc).__name__)
            await self._recorder.record(
                run, self._recorder.rolled_back(run, progress.reached, *failed)
            )

    async def _rehearsal(self, run: BatchRun, progress: _Progress) -> list[OperationResult]:
        """Every operation as for real, each in a savepoint, later ones seeing earlier ones'
        effects; then everything is rolled back. Returns what a real run would have said."""
        results: list[OperationResult] = []
        async with self._tx.unit_of_work() as uow:
            now = self._clock()
            run.actor_stale = True  # one transaction: read the actor in it
            for index, operation in enumerate(run.request.operations):
                progress.reached = index
                results.append(await self._rehearse_operation(uow, run, index, operation, now))
                if not results[-1].success and run.request.mode is not Mode.CONTINUE:
                    break
            await uow.rollback()  # the rehearsal leaves nothing behind
        return self._as_a_real_run(run, results)

    async def _rehearse_operation(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        index: int,
        operation: Operation,
        now: datetime,
    ) -> OperationResult:
        try:
            async with uow.savepoint():  # a failed operation's writes go, the rest stay
                context = OperationContext(uow, run.request.actor_id, await run.actor_for(uow), now)
                data = await run.handler(context, operation)
        except OperationFailed as failure:
            failed = (failure.code, failure.message, failure.public_type)
            return self._recorder.failed(run, index, operation, *failed)
        except Exception as exc:
            if _escapes(exc) or self._tx.classify(exc).transient:
                raise
            code, message = self._crash_report(exc)
            return self._recorder.failed(run, index, operation, code, message, type(exc).__name__)
        run.note_success(operation)
        return self._recorder.succeeded(run, index, operation, data, now)

    def _as_a_real_run(
        self, run: BatchRun, results: list[OperationResult]
    ) -> list[OperationResult]:
        """The rehearsal's results completed as the batch's mode would: after a failure,
        stop_on_error skips the rest, atomic rolls everything back."""
        failure = next((r for r in results if not r.success), None)
        if failure is None or run.request.mode is Mode.CONTINUE:
            return results
        assert failure.error is not None  # noqa: S101 - every failed result has its error
        error = (failure.error.code, failure.error.message, failure.error.type)
        if run.request.mode is Mode.ATOMIC:
            return self._recorder.rolled_back(run, failure.index, *error)
        reason = f"not executed: operation {failure.index} failed (stop_on_error)"
        rest = [(i, op) for i, op in enumerate(run.request.operations) if i > failure.index]
        return [*results, *self._recorder.skipped(run, rest, reason)]


def _escapes(exc: Exception) -> bool:
    """What must leave an operation as it is, never becoming its result."""
    return isinstance(exc, Interrupted | BatchCancelled)


@dataclass(slots=True)
class _Progress:
    reached: int = 0  # the operation in hand when a fault escapes the transaction


class _RollBack(Exception):
    """An operation of an atomic batch failed: roll everything back and record `results`."""

    def __init__(self, results: list[OperationResult]) -> None:
        super().__init__("atomic batch rolled back")
        self.results = results
