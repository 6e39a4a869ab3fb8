"""Recording operation results: each result row with its event in the outbox, committed with
whatever effect the unit of work holds, or alone for results that carry no effect (failures
the handler did not write anything for, skips, a poison batch given up)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from consumer.service_layer.batch_run import BatchRun
from consumer.service_layer.events import EventFactory
from consumer.service_layer.retry import Transactions
from consumer.service_layer.telemetry import OutboxListener, Telemetry
from consumer.service_layer.unit_of_work import (
    AbstractUnitOfWork,
    BatchCancelled,
    DuplicateResult,
)
from contracts import ErrorCode, Mode, Operation, OperationResult, Outcome

log = structlog.get_logger(__name__)
POISONED = "the operation crashed the consumer on every delivery"
CANCELLED = "not executed: the batch was cancelled"


class ResultRecorder:
    def __init__(
        self,
        transactions: Transactions,
        events: EventFactory,
        clock: Callable[[], datetime],
        on_outbox: OutboxListener,
        telemetry: Telemetry,
    ) -> None:
        self._tx = transactions
        self._events = events
        self._clock = clock
        self._on_outbox = on_outbox
        self._telemetry = telemetry

    # -- results ------------------------------------------------------------------------------

    def succeeded(
        self, run: BatchRun, index: int, operation: Operation, data: dict[str, Any], now: datetime
    ) -> OperationResult:
        return self._events.succeeded(
            run.state, run.stored.correlation_id, index, operation.resource_id, data, now
        )

    def failed(
        self,
        run: BatchRun,
        index: int,
        operation: Operation,
        code: ErrorCode,
        message: str,
        error_type: str,
    ) -> OperationResult:
        if code is not ErrorCode.SKIPPED:
            # The event's error.type is the code's fixed word; the internal one is logged only.
            log.info(
                "operation_failed", index=index, code=code.value, error=message, kind=error_type
            )
        return self._events.failed(
            run.state,
            run.stored.correlation_id,
            index,
            operation.resource_id,
            code,
            message,
            self._clock(),
        )

    def skipped(
        self, run: BatchRun, operations: Sequence[tuple[int, Operation]], reason: str
    ) -> list[OperationResult]:
        return [
            self.failed(run, i, op, ErrorCode.SKIPPED, reason, "Skipped") for i, op in operations
        ]

    def rolled_back(
        self, run: BatchRun, failed_index: int, code: ErrorCode, message: str, error_type: str
    ) -> list[OperationResult]:
        """An atomic batch's results once operation `failed_index` failed: it with its error,
        every other one skipped (whatever ran was rolled back with it)."""
        operations = list(enumerate(run.request.operations))
        reason = f"rolled back: operation {failed_index} failed (atomic)"
        return [
            self.failed(run, i, op, code, message, error_type)
            if i == failed_index
            else self.skipped(run, [(i, op)], reason)[0]
            for i, op in operations
        ]

    def given_up(self, run: BatchRun, crashed_index: int) -> list[OperationResult]:
        """The results of a poison batch: the operation that kept crashing the consumer is an
        INTERNAL_ERROR, and the rest are skipped (all of them, for an atomic batch)."""
        if run.request.mode is Mode.ATOMIC:
            return self.rolled_back(
                run, crashed_index, ErrorCode.INTERNAL_ERROR, POISONED, "PoisonMessage"
            )
        pending = run.pending()
        crashed = next(op for i, op in pending if i == crashed_index)
        reason = f"not executed: operation {crashed_index} crashed the consumer"
        rest = [(i, op) for i, op in pending if i > crashed_index]
        return [
            self.failed(
                run, crashed_index, crashed, ErrorCode.INTERNAL_ERROR, POISONED, "PoisonMessage"
            ),
            *self.skipped(run, rest, reason),
        ]

    def cancelled(
        self, run: BatchRun, operations: Sequence[tuple[int, Operation]]
    ) -> list[OperationResult]:
        return self.skipped(run, operations, CANCELLED)

    # -- committing ---------------------------------------------------------------------------

    async def record(
        self, run: BatchRun, results: list[OperationResult], *, cancellable: bool = False
    ) -> Outcome:
        """Commit results in a transaction of their own: results that carry no effect, or a
        dry run's (`cancellable`: refused if a cancel came first, see commit)."""

        async def commit(uow: AbstractUnitOfWork) -> Outcome:
            return await self.commit(uow, run, results, cancellable=cancellable)

        outcome = await self._tx.run(commit)
        for result in results:
            run.outcomes.setdefault(result.index, result.outcome)
        return outcome

    async def commit(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        results: list[OperationResult],
        *,
        chain: bool = False,
        cancellable: bool = True,
    ) -> Outcome:
        """Write result rows and their events with whatever `uow` already holds, then commit
        (with `chain`, the next transaction opens in the same round trip).

        Returns the outcome of the first result, or the one already stored when another
        delivery of this batch committed it first (that effect then stays rolled back here).
        Raises BatchCancelled, having rolled back, when the results are `cancellable` (those
        of operations that ran) and the batch was asked to cancel first.
        """
        try:
            await self.write(uow, run, results, cancellable=cancellable)
        except DuplicateResult:
            await uow.rollback()
            stored = {r.index: r.outcome for r in await uow.batches.results(run.batch_id)}
            return stored[results[0].index]
        except BatchCancelled:
            await uow.rollback()
            raise
        await uow.commit(chain=chain)
        self._on_outbox(urgent=False)
        self._telemetry.results_recorded(results)
        return results[0].outcome

    async def write(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        results: Sequence[OperationResult],
        *,
        cancellable: bool,
    ) -> None:
        """The result rows and, but for a dry run, their events; not committed."""
        quiet = run.request.dry_run  # a dry run publishes its completion only
        for result in results:
            body = result.model_dump_json().encode()
            await uow.batches.add_result(
                run.batch_id,
                result.index,
                result.resource_id,
                result.outcome,
                result.status,
                result.error.code.value if result.error else None,
                body,
                None if quiet else self._events.operation_message(result, body),
                cancellable=cancellable,
            )
