"""Job control: cancel a batch, and build the retry of what it did not get done.

A cancel is recorded on the batch row. A batch still `pending` (stored by the HTTP API, no
consumer has taken it) ends `cancelled` at once; a running one stops before its next operation,
because every operation's result is refused once the cancel is committed (adapters/batches.py
orders the two on the batch row); one nobody has seen yet is cancelled in advance and runs
nothing when its request arrives.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.domain.batch import BatchState
from consumer.domain.model import Actor
from consumer.service_layer.announcer import Announcer
from consumer.service_layer.batch_run import BatchRun, utcnow
from consumer.service_layer.events import EventFactory
from consumer.service_layer.handlers import OperationContext
from consumer.service_layer.recorder import ResultRecorder
from consumer.service_layer.retry import Transactions
from consumer.service_layer.telemetry import OutboxListener, Telemetry, ignore_outbox
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, StoredBatch
from contracts import BatchRequest, BatchStatus, Operation, Outcome

RETRYABLE = frozenset({BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.CANCELLED})


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # 202
    NOT_FOUND = "not_found"  # 404: unknown, or not the caller's to see
    REFUSED = "refused"  # 409: the batch is not in a state that allows it


class Refused(Exception):
    """A retry the batch's state does not allow (409), with why."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


class JobControl:
    def __init__(
        self,
        transactions: Transactions,
        events: EventFactory,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_outbox: OutboxListener = ignore_outbox,
        telemetry: Telemetry | None = None,
    ) -> None:
        telemetry = telemetry or Telemetry()
        self._tx = transactions
        self._clock = clock
        self._recorder = ResultRecorder(transactions, events, clock, on_outbox, telemetry)
        self._announcer = Announcer(transactions, events, clock, on_outbox, telemetry)

    async def cancel(self, batch_id: UUID, actor: Actor | None) -> Verdict:
        """Cancel for `actor` (None: an operator, who may cancel any batch). Admin, staff and
        operators may cancel a batch nobody has seen yet, in advance."""

        async def cancel(uow: AbstractUnitOfWork) -> tuple[Verdict, BatchState | None]:
            stored = await uow.batches.get(batch_id, for_update=True)
            by = None if actor is None else actor.id
            now = self._clock()
            if stored is None:
                if actor is not None and not actor.is_back_office:
                    return Verdict.NOT_FOUND, None
                await uow.batches.cancel_in_advance(batch_id, by, now)
                await uow.commit()
                return Verdict.ACCEPTED, None
            if not _visible(stored, actor):
                return Verdict.NOT_FOUND, None
            if _nothing_left(stored):
                return Verdict.REFUSED, None
            await uow.batches.request_cancel(batch_id, by, now)
            finished = await self._stop_now_if_pending(uow, stored)
            await uow.commit()
            return Verdict.ACCEPTED, finished

        verdict, finished = await self._tx.run(cancel)
        if finished is not None:
            self._announcer.announced(finished)
        return verdict

    async def _stop_now_if_pending(
        self, uow: AbstractUnitOfWork, stored: StoredBatch
    ) -> BatchState | None:
        """A batch no consumer has taken yet ends at once: every operation skipped, the
        completion queued. Returns its finished state (None for any other batch)."""
        request = await uow.batches.request_of(stored.state.batch_id)
        if stored.state.status is not BatchStatus.PENDING or request is None:
            return None  # running: its consumer stops it; or cancelled in advance: unknown yet
        state = replace(stored.state, cancel_requested=True)
        run = BatchRun(BatchRequest.model_validate(request), replace(stored, state=state), _never)
        skipped = self._recorder.cancelled(run, run.pending())
        await self._recorder.write(uow, run, skipped, cancellable=False)
        counted = await uow.batches.get(stored.state.batch_id)
        assert counted is not None  # noqa: S101 - locked by this transaction
        return await self._announcer.close_in(uow, counted)

    async def retry_request(self, batch_id: UUID, actor: Actor | None) -> BatchRequest:
        """A new batch of the operations of `batch_id` that did not succeed, in their order,
        for the same actor, type, handler and mode. Raises Refused (NOT_FOUND or REFUSED)."""

        async def read(
            uow: AbstractUnitOfWork,
        ) -> tuple[StoredBatch | None, dict[str, Any] | None, set[int]]:
            stored = await uow.batches.get(batch_id)
            if stored is None:
                return None, None, set()
            succeeded = {
                r.index
                for r in await uow.batches.results(batch_id)
                if r.outcome is Outcome.SUCCEEDED
            }
            return stored, await uow.batches.request_of(batch_id), succeeded

        stored, request, succeeded = await self._tx.run(read)
        if stored is None or not _visible(stored, actor):
            raise Refused(Verdict.NOT_FOUND, f"batch {batch_id} not found")
        _check_retryable(stored, request)
        assert request is not None  # noqa: S101 - checked above
        original = BatchRequest.model_validate(request)
        return original.model_copy(
            update={
                "batch_id": uuid.uuid4(),
                "operations": [
                    op for i, op in enumerate(original.operations) if i not in succeeded
                ],
                "retry_of": batch_id,
                "dry_run": False,
            }
        )


def _visible(stored: StoredBatch, actor: Actor | None) -> bool:
    """Owners see their batches, admin and staff every one, operators (None) too."""
    return actor is None or actor.is_back_office or stored.state.actor_id == actor.id


def _nothing_left(stored: StoredBatch) -> bool:
    """Terminal, or every operation already has its result (it is only finishing)."""
    state = stored.state
    return state.is_complete or (
        state.status is BatchStatus.PROCESSING and state.finished >= state.total
    )


def _check_retryable(stored: StoredBatch, request: dict[str, Any] | None) -> None:
    state = stored.state
    if state.dry_run:
        raise Refused(Verdict.REFUSED, "a dry run changes nothing: there is nothing to retry")
    if state.status not in RETRYABLE:
        raise Refused(
            Verdict.REFUSED,
            f"the batch is {state.status.value}: only a partial, failed or cancelled batch "
            "can be retried",
        )
    if request is None:
        raise Refused(Verdict.REFUSED, "the batch was stored without its request")


async def _never(_ctx: OperationContext, _operation: Operation) -> dict[str, Any]:
    raise AssertionError("a cancelled batch runs nothing")
