"""Completion and rejection events: written to the outbox, re-sent byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import structlog

from consumer.domain.batch import BatchState
from consumer.service_layer.events import EventFactory
from consumer.service_layer.intake import Delivery, Rejection
from consumer.service_layer.retry import Transactions
from consumer.service_layer.telemetry import OutboxListener, Telemetry
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, StoredBatch
from contracts import BatchStatus, batch_routing_key, completion_event_id

log = structlog.get_logger(__name__)


class Announcer:
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

    async def finish(self, batch_id: UUID, delivery: Delivery) -> None:
        """Close the batch (if another delivery did not) and queue its completion, including
        the copy to this delivery's `reply_to`."""

        async def close(uow: AbstractUnitOfWork) -> BatchState | None:
            stored = await uow.batches.get(batch_id, for_update=True)
            if stored is None:
                raise LookupError(f"batch {batch_id} vanished while it ran")
            finished = await self.close_in(uow, stored, delivery.reply_to, delivery.correlation_id)
            await uow.commit()
            return finished

        self.announced(await self._tx.run(close))

    async def close_in(
        self,
        uow: AbstractUnitOfWork,
        stored: StoredBatch,
        reply_to: str | None = None,
        reply_correlation_id: str | None = None,
    ) -> BatchState | None:
        """In `uow`'s transaction: give the batch its terminal status and completion event
        (unless it has them) and queue the completion; returns the state when it was this
        call that finished it. Call `announced` once it commits."""
        finished = None
        if not stored.state.is_complete:
            stored = await self._complete(uow, stored)
            finished = stored.state
        await self._enqueue_completion(uow, stored, reply_to, reply_correlation_id)
        return finished

    def announced(self, finished: BatchState | None) -> None:
        """After the commit of `close_in`: wake the relay, count and log a finished batch."""
        self._on_outbox(urgent=True)
        if finished is not None:
            self._telemetry.batch_finished(finished)
            _log_finished(finished)

    async def _complete(self, uow: AbstractUnitOfWork, stored: StoredBatch) -> StoredBatch:
        """Give the batch its terminal status and completion event (not yet committed)."""
        state = stored.state
        state.complete(self._clock())
        results = await uow.batches.result_events(state.batch_id)
        body = self._events.completion_body(state, stored.correlation_id, results)
        await uow.batches.complete(state, body)
        return replace(stored, completion_event=body)

    async def resend_completion(self, batch_id: UUID, delivery: Delivery) -> None:
        async def resend(uow: AbstractUnitOfWork) -> None:
            stored = await uow.batches.get(batch_id)
            if stored is None:
                raise LookupError(f"batch {batch_id} vanished")
            await self._enqueue_completion(uow, stored, delivery.reply_to, delivery.correlation_id)
            await uow.commit()

        await self._tx.run(resend)
        self._on_outbox(urgent=True)

    async def _enqueue_completion(
        self,
        uow: AbstractUnitOfWork,
        stored: StoredBatch,
        reply_to: str | None,
        reply_correlation_id: str | None,
    ) -> None:
        if stored.completion_event is None:
            raise LookupError(f"batch {stored.state.batch_id} is terminal but has no completion")
        state = stored.state
        for message in self._events.batch_messages(
            self._events.completion_routing_key(state),
            completion_event_id(state.batch_id),
            stored.completion_event,
            stored.correlation_id,
            reply_to,
            reply_correlation_id,
        ):
            await uow.outbox.add(message)

    async def reject(self, rejection: Rejection, delivery: Delivery) -> None:
        reason = rejection.errors[0].type if rejection.errors else rejection.code.value.lower()
        log.warning(
            "batch_rejected",
            code=rejection.code.value,
            reason=reason,
            batch_id=str(rejection.batch_id) if rejection.batch_id else None,
            correlation_id=delivery.correlation_id,
            message_id=delivery.message_id,
            errors=[r.model_dump() for r in rejection.errors],
        )
        self._telemetry.batch_rejected(rejection.code, reason)
        now = self._clock()
        event = self._events.rejected(rejection, delivery.correlation_id, now)
        fresh = event.model_dump_json().encode()

        async def announce(uow: AbstractUnitOfWork) -> None:
            # A redelivered refusal re-sends the first copy: same event id, same body.
            body = await uow.outbox.body_of(event.event_id) or fresh
            if rejection.recordable:
                await uow.batches.record_rejection(
                    rejected_batch(rejection, delivery.correlation_id, body, now)
                )
            for message in self._events.batch_messages(
                batch_routing_key(rejection.operation_type, BatchStatus.REJECTED.value),
                event.event_id,
                body,
                delivery.correlation_id,
                delivery.reply_to,
                delivery.correlation_id,
            ):
                await uow.outbox.add(message)
            await uow.commit()

        await self._tx.run(announce)
        self._on_outbox(urgent=True)


def rejected_batch(
    rejection: Rejection, correlation_id: str | None, event: bytes, now: datetime
) -> StoredBatch:
    """The record of a refused request: never executed, so it counts no operations."""
    assert rejection.batch_id is not None  # noqa: S101 - callers check `recordable`
    assert rejection.actor_id is not None  # noqa: S101 - callers check `recordable`
    state = BatchState(
        batch_id=rejection.batch_id,
        operation_type=rejection.operation_type,
        actor_id=rejection.actor_id,
        mode=rejection.mode,
        total=0,
        created_at=now,
        status=BatchStatus.REJECTED,
        completed_at=now,
    )
    return StoredBatch(
        state=state,
        handler=rejection.handler,
        fingerprint=rejection.fingerprint,
        correlation_id=correlation_id,
        completion_event=event,
        code=rejection.code,
        errors=rejection.errors,
    )


def _log_finished(state: BatchState) -> None:
    log.info(
        "batch_finished",
        status=state.status.value,
        completed=state.completed,
        failed=state.failed,
        skipped=state.skipped,
        duration_seconds=state.duration_seconds,
    )
