"""Run one delivered batch to a terminal status, exactly once per operation (docs/contract.md).

Every operation commits its effect, its result row and its outbox event in one transaction;
the result row's key (batch_id, index) makes a second commit of the same operation impossible,
so a redelivered or concurrently delivered batch resumes where the last commit left it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from uuid import UUID

import structlog
from structlog.contextvars import bound_contextvars

from consumer import metrics, tracing
from consumer.domain.batch import BatchState
from consumer.domain.errors import OperationFailed
from consumer.log_config import LogThrottle
from consumer.service_layer.announcer import Announcer
from consumer.service_layer.batch_run import BatchRun, Disposition, Interrupted, utcnow
from consumer.service_layer.events import EventFactory
from consumer.service_layer.faults import describe
from consumer.service_layer.handlers import OperationContext, OperationHandler
from consumer.service_layer.intake import (
    Delivery,
    IntakePolicy,
    Rejection,
    accept,
    conflict,
    fingerprint,
)
from consumer.service_layer.retry import Transactions
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, DuplicateResult, StoredBatch
from contracts import (
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Mode,
    Operation,
    OperationResult,
    Outcome,
)

log = structlog.get_logger(__name__)
# A fault that outlives its retries may hit every batch in flight at once: one line per
# interval, not a traceback per operation.
_unavailable_log = LogThrottle(log)


class BatchExecutor:
    def __init__(
        self,
        transactions: Transactions,
        handlers: Mapping[str, OperationHandler],
        custom_handlers: Mapping[str, OperationHandler],
        policy: IntakePolicy,
        events: EventFactory,
        *,
        delivery_limit: int,
        clock: Callable[[], datetime] = utcnow,
        # Called after events commit; True for a batch's last ones (see OutboxRelay.wake).
        on_outbox: Callable[[bool], None] = lambda _urgent: None,
    ) -> None:
        self._tx = transactions
        self._handlers = handlers
        self._custom_handlers = custom_handlers
        self._policy = policy
        self._events = events
        self._delivery_limit = delivery_limit
        self._clock = clock
        self._on_outbox = on_outbox
        self._stop_requested = False
        self._announcer = Announcer(transactions, events, clock, on_outbox)

    def request_stop(self) -> None:
        """Let running batches finish the operation in hand, then raise Interrupted."""
        self._stop_requested = True

    async def handle(self, delivery: Delivery) -> Disposition:
        """Validate, execute and finish one batch. While the database is unreachable it waits
        for it. Raises Interrupted when shutdown stops it before the end, and whatever a bug
        raises outside an operation: the message must then be redelivered."""
        with tracing.batch_span(delivery.traceparent):
            verdict = accept(delivery, self._policy)
            if isinstance(verdict, Rejection) and delivery.dead_lettered:
                return Disposition.ACK  # its rejection was published when it was refused
            if isinstance(verdict, Rejection):
                await self._announcer.reject(verdict, delivery)
                return Disposition.DEAD_LETTER
            tracing.annotate(
                batch_id=str(verdict.batch_id), operation_type=verdict.operation_type.value
            )
            with bound_contextvars(
                batch_id=str(verdict.batch_id),
                correlation_id=delivery.correlation_id,
                operation_type=verdict.operation_type.value,
            ):
                return await self._handle_request(verdict, delivery)

    async def _handle_request(self, request: BatchRequest, delivery: Delivery) -> Disposition:
        stored, is_new = await self._claim(request, delivery)
        if stored.fingerprint != fingerprint(request):
            await self._announcer.reject(conflict(delivery, request), delivery)
            return Disposition.DEAD_LETTER
        if stored.state.is_complete and delivery.dead_lettered:
            return Disposition.ACK  # it finished on its last delivery; nothing is missing
        if stored.state.is_complete:
            log.info("duplicate_batch_completion_resent", status=stored.state.status.value)
            await self._announcer.resend_completion(request.batch_id, delivery)
            return Disposition.ACK
        run = BatchRun(
            request, stored, self._handler_for(request), interruptible=not delivery.dead_lettered
        )
        if not is_new:
            run.outcomes = await self._stored_outcomes(request.batch_id)
            log.info(
                "batch_resumed", finished=len(run.outcomes), delivery_count=delivery.delivery_count
            )
        if delivery.give_up:
            # Even its isolated run crashed: finish the batch without running the operation that
            # keeps crashing us, so that it still reaches a terminal status.
            await self._give_up(run)
            await self._announcer.finish(run.batch_id, delivery)
            return Disposition.ACK
        if request.mode is Mode.ATOMIC:
            await self._run_atomic(run)
        else:
            await self._run_in_order(run)
        await self._announcer.finish(run.batch_id, delivery)
        return Disposition.ACK

    def _handler_for(self, request: BatchRequest) -> OperationHandler:
        if request.handler is not None:
            return self._custom_handlers[request.handler]
        return self._handlers[request.operation_type.value]

    async def _claim(self, request: BatchRequest, delivery: Delivery) -> tuple[StoredBatch, bool]:
        now = self._clock()
        fresh = StoredBatch(
            state=BatchState(
                batch_id=request.batch_id,
                operation_type=request.operation_type.value,
                actor_id=request.actor_id,
                mode=request.mode,
                total=len(request.operations),
                created_at=now,
                status=BatchStatus.PROCESSING,
                started_at=now,
            ),
            handler=request.handler,
            fingerprint=fingerprint(request),
            correlation_id=delivery.correlation_id,
            completion_event=None,
        )

        async def claim(uow: AbstractUnitOfWork) -> tuple[StoredBatch, bool]:
            claimed = await uow.batches.claim(fresh)
            await uow.commit()
            return claimed

        return await self._tx.run(claim)

    async def _stored_outcomes(self, batch_id: UUID) -> dict[int, Outcome]:
        async def outcomes(uow: AbstractUnitOfWork) -> dict[int, Outcome]:
            return {r.index: r.outcome for r in await uow.batches.results(batch_id)}

        return await self._tx.run(outcomes)

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
                    await self._skip(run, f"not executed: operation {first} failed (stop_on_error)")
                    return
                if self._stop_requested and run.interruptible:
                    raise Interrupted(f"stopped before operation {index}")
                chain = index != pending[-1][0]
                with bound_contextvars(index=index):
                    run.outcomes[index] = await self._execute(uow, run, index, operation, chain)
        finally:
            await uow.close()

    async def _execute(
        self, uow: AbstractUnitOfWork, run: BatchRun, index: int, operation: Operation, chain: bool
    ) -> Outcome:
        async def attempt() -> Outcome:
            async with uow:
                now = self._clock()
                context = OperationContext(uow, run.request.actor_id, await run.actor_for(uow), now)
                try:
                    data = await run.handler(context, operation)
                    run.note_success(operation)
                    result = self._events.succeeded(
                        run.state,
                        run.stored.correlation_id,
                        index,
                        operation.resource_id,
                        data,
                        now,
                    )
                except OperationFailed as failure:
                    await uow.rollback()  # whatever the handler wrote before failing goes
                    result = self._failure(
                        run, index, operation, failure.code, failure.message, failure.public_type
                    )
                return await self._commit_results(uow, run, [result], chain=chain)

        try:
            with (
                metrics.OPERATION_DURATION.labels(run.state.operation_type).time(),
                tracing.operation_span(
                    index=index, resource_id=operation.resource_id, batch_id=str(run.batch_id)
                ),
            ):
                return await self._tx.retry(attempt)
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes this operation's result
            code, message = self._crash_report(exc)
            failure = self._failure(run, index, operation, code, message, type(exc).__name__)
            return await self._record(run, [failure])

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

        reached = 0  # the operation in hand when a fault escapes the transaction

        async def attempt() -> None:
            nonlocal reached
            async with self._tx.unit_of_work() as uow:
                now = self._clock()
                run.actor_stale = True  # one transaction: read the actor in it
                context = OperationContext(uow, run.request.actor_id, await run.actor_for(uow), now)
                results: list[OperationResult] = []
                for index, operation in enumerate(run.request.operations):
                    reached = index
                    await self._mark_in_hand(run, index)
                    try:
                        data = await run.handler(context, operation)
                        await uow.flush()  # a refused write is this operation's failure
                        run.note_success(operation)
                        if run.actor_stale:
                            context = OperationContext(
                                uow, run.request.actor_id, await run.actor_for(uow), now
                            )
                    except OperationFailed as failure:
                        await uow.rollback()
                        results = self._rolled_back(
                            run, index, failure.code, failure.message, failure.public_type
                        )
                        break
                    except Exception as exc:
                        if isinstance(exc, Interrupted) or self._tx.classify(exc).transient:
                            raise
                        await uow.rollback()
                        code, message = self._crash_report(exc)
                        results = self._rolled_back(run, index, code, message, type(exc).__name__)
                        break
                    results.append(
                        self._events.succeeded(
                            run.state,
                            run.stored.correlation_id,
                            index,
                            operation.resource_id,
                            data,
                            now,
                        )
                    )
                await self._commit_results(uow, run, results)

        try:
            await self._tx.retry(attempt)
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - transient beyond retries, or a failed commit
            code, message = self._crash_report(exc)
            await self._record(
                run, self._rolled_back(run, reached, code, message, type(exc).__name__)
            )

    def _rolled_back(
        self, run: BatchRun, failed_index: int, code: ErrorCode, message: str, error_type: str
    ) -> list[OperationResult]:
        reason = f"rolled back: operation {failed_index} failed (atomic)"
        return [
            self._failure(run, i, op, code, message, error_type)
            if i == failed_index
            else self._failure(run, i, op, ErrorCode.SKIPPED, reason, "Skipped")
            for i, op in enumerate(run.request.operations)
        ]

    # -- recording ---------------------------------------------------------------------------

    def _failure(
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

    async def _skip(self, run: BatchRun, reason: str) -> None:
        skipped = [
            self._failure(run, i, op, ErrorCode.SKIPPED, reason, "Skipped")
            for i, op in run.pending()
        ]
        await self._record(run, skipped)

    async def _mark_in_hand(self, run: BatchRun, index: int) -> None:
        """Note the operation in hand, beside the atomic transaction. Not retried on its own:
        it runs inside that transaction's attempt, whose retry (or wait for the end of an
        outage) covers it; a wait of its own would spend the attempt's retry time."""
        async with self._tx.unit_of_work() as uow:
            await uow.batches.mark_in_hand(run.batch_id, index)
            await uow.commit()

    async def _give_up(self, run: BatchRun) -> None:
        pending = run.pending()
        if not pending:
            return
        if run.request.mode is Mode.ATOMIC:
            crashed_index = run.stored.in_hand or 0
            log.error("poison_batch_given_up", index=crashed_index)
            await self._record(
                run,
                self._rolled_back(
                    run,
                    crashed_index,
                    ErrorCode.INTERNAL_ERROR,
                    "the operation crashed the consumer on every delivery",
                    "PoisonMessage",
                ),
            )
            return
        index, operation = pending[0]
        log.error("poison_batch_given_up", index=index, delivery_limit=self._delivery_limit)
        crashed = self._failure(
            run,
            index,
            operation,
            ErrorCode.INTERNAL_ERROR,
            "the operation crashed the consumer on every delivery",
            "PoisonMessage",
        )
        reason = f"not executed: operation {index} crashed the consumer"
        rest = [
            self._failure(run, i, op, ErrorCode.SKIPPED, reason, "Skipped") for i, op in pending[1:]
        ]
        await self._record(run, [crashed, *rest])

    async def _record(self, run: BatchRun, results: list[OperationResult]) -> Outcome:
        """Commit results that carry no effect (failures, skips) in a transaction of their own."""

        async def commit(uow: AbstractUnitOfWork) -> Outcome:
            return await self._commit_results(uow, run, results)

        outcome = await self._tx.run(commit)
        for result in results:
            run.outcomes.setdefault(result.index, result.outcome)
        return outcome

    async def _commit_results(
        self,
        uow: AbstractUnitOfWork,
        run: BatchRun,
        results: list[OperationResult],
        *,
        chain: bool = False,
    ) -> Outcome:
        """Write result rows and their events with whatever `uow` already holds, then commit.

        Returns the outcome of the first result, or the one already stored when another
        delivery of this batch committed it first (that effect then stays rolled back here).
        """
        try:
            for result in results:
                body = result.model_dump_json().encode()
                error_code = result.error.code.value if result.error else None
                await uow.batches.add_result(
                    run.batch_id,
                    result.index,
                    result.resource_id,
                    result.outcome,
                    result.status,
                    error_code,
                    body,
                    self._events.operation_message(result, body),
                )
        except DuplicateResult:
            await uow.rollback()
            stored = {r.index: r.outcome for r in await uow.batches.results(run.batch_id)}
            return stored[results[0].index]
        await uow.commit(chain=chain)
        self._on_outbox(False)
        for result in results:
            code = result.error.code.value if result.error else ""
            metrics.OPERATIONS.labels(result.outcome.value, code).inc()
        return results[0].outcome
