"""The state of one batch while the executor runs it, and what the entrypoint does after."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from consumer.domain.batch import BatchState
from consumer.domain.model import Actor
from consumer.service_layer.handlers import OperationHandler
from consumer.service_layer.unit_of_work import AbstractUnitOfWork, StoredBatch
from contracts import BatchRequest, Operation, OperationType, Outcome


class Interrupted(Exception):
    """Shutdown was requested between two operations; the rest is left to redelivery."""


class Disposition(enum.Enum):
    """What the entrypoint does with the message once `handle` returns."""

    ACK = "ack"
    DEAD_LETTER = "dead_letter"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class BatchRun:
    request: BatchRequest
    stored: StoredBatch
    handler: OperationHandler
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    # A dead-lettered request's last chance runs to the end even during shutdown: requeueing it
    # would mark it redelivered, which the reconciler reads as "it crashed us".
    interruptible: bool = True
    # The actor as this batch last read it. Read once, not per operation (a round trip each),
    # and again after an operation of the batch changed or deleted that very user.
    actor: Actor | None = None
    actor_stale: bool = True

    async def actor_for(self, uow: AbstractUnitOfWork) -> Actor | None:
        if self.actor_stale:
            self.actor = await uow.marketplace.get_actor(self.request.actor_id)
            self.actor_stale = False
        return self.actor

    def note_success(self, operation: Operation) -> None:
        if operation.resource_id == self.request.actor_id and self.request.operation_type in (
            OperationType.USER_UPDATE,
            OperationType.BULK_DELETE,
        ):
            self.actor_stale = True

    @property
    def batch_id(self) -> UUID:
        return self.request.batch_id

    @property
    def state(self) -> BatchState:
        return self.stored.state

    def pending(self) -> list[tuple[int, Operation]]:
        return [(i, op) for i, op in enumerate(self.request.operations) if i not in self.outcomes]
