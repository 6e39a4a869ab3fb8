"""Run one delivered batch to a terminal status, exactly once per operation (docs/contract.md).

Every operation commits its effect, its result row and its outbox event in one transaction;
the result row's key (batch_id, index) makes a second commit of the same operation impossible,
so a redelivered or concurrently delivered batch resumes where the last commit left it.

The executor validates and claims the batch and finishes it; running.py runs its operations,
recorder.py records their results, announcer.py publishes completions and rejections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from uuid import UUID

import structlog
from structlog.contextvars import bound_contextvars

from consumer.domain.batch import BatchState
from consumer.service_layer.announcer import Announcer
from consumer.service_layer.authorisation import granted_outright, is_granted
from consumer.service_layer.batch_run import BatchRun, Disposition, utcnow
from consumer.service_layer.events import EventFactory
from consumer.service_layer.handlers import OperationHandler
from consumer.service_layer.intake import (
    Delivery,
    IntakePolicy,
    Rejection,
    accept,
    conflict,
    denied,
    fingerprint,
)
from consumer.service_layer.recorder import ResultRecorder
from consumer.service_layer.retry import Transactions
from consumer.service_layer.running import OperationRunner
from consumer.service_layer.telemetry import OutboxListener, Telemetry, ignore_outbox
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, StoredBatch
from contracts import BatchRequest, BatchStatus, Mode, Outcome

log = structlog.get_logger(__name__)


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
        on_outbox: OutboxListener = ignore_outbox,
        telemetry: Telemetry | None = None,
    ) -> None:
        telemetry = telemetry or Telemetry()
        self._tx = transactions
        self._handlers = handlers
        self._custom_handlers = custom_handlers
        self._policy = policy
        self._clock = clock
        self._delivery_limit = delivery_limit
        self._telemetry = telemetry
        self._recorder = ResultRecorder(transactions, events, clock, on_outbox, telemetry)
        self._runner = OperationRunner(transactions, self._recorder, clock, telemetry)
        self._announcer = Announcer(transactions, events, clock, on_outbox, telemetry)

    def request_stop(self) -> None:
        """Let running batches finish the operation in hand, then raise Interrupted."""
        self._runner.stop_requested = True

    async def handle(self, delivery: Delivery) -> Disposition:
        """Validate, execute and finish one batch. While the database is unreachable it waits
        for it. Raises Interrupted when shutdown stops it before the end, and whatever a bug
        raises outside an operation: the message must then be redelivered."""
        with self._telemetry.batch_span(delivery.traceparent):
            verdict = accept(delivery, self._policy)
            if isinstance(verdict, Rejection) and delivery.dead_lettered:
                return Disposition.ACK  # its rejection was published when it was refused
            if isinstance(verdict, Rejection):
                await self._announcer.reject(verdict, delivery)
                return Disposition.DEAD_LETTER
            self._telemetry.annotate(
                batch_id=str(verdict.batch_id), operation_type=verdict.operation_type.value
            )
            with bound_contextvars(
                batch_id=str(verdict.batch_id),
                correlation_id=delivery.correlation_id,
                operation_type=verdict.operation_type.value,
            ):
                return await self._handle_request(verdict, delivery)

    async def _handle_request(self, request: BatchRequest, delivery: Delivery) -> Disposition:
        if not await self._granted(request, delivery):
            if delivery.dead_lettered:
                return Disposition.ACK  # its rejection was published when it was refused
            await self._announcer.reject(denied(delivery, request), delivery)
            return Disposition.DEAD_LETTER
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
        else:
            await self._runner.run(run)
        await self._announcer.finish(run.batch_id, delivery)
        return Disposition.ACK

    async def _granted(self, request: BatchRequest, delivery: Delivery) -> bool:
        grants, user_id = self._policy.grants, delivery.user_id or ""

        async def check(uow: AbstractUnitOfWork) -> bool:
            return await is_granted(uow, grants, request, user_id)

        return granted_outright(grants, request, user_id) or await self._tx.run(check)

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
                dry_run=request.dry_run,
                retry_of=request.retry_of,
            ),
            handler=request.handler,
            fingerprint=fingerprint(request),
            correlation_id=delivery.correlation_id,
            completion_event=None,
            request=request.model_dump(mode="json"),
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

    async def _give_up(self, run: BatchRun) -> None:
        pending = run.pending()
        if not pending:
            return
        # An atomic batch's operation in hand is recorded beside it (nothing else says which).
        atomic = run.request.mode is Mode.ATOMIC
        crashed = (run.stored.in_hand or 0) if atomic else pending[0][0]
        log.error("poison_batch_given_up", index=crashed, delivery_limit=self._delivery_limit)
        await self._recorder.record(run, self._recorder.given_up(run, crashed))
