"""The ports the service layer works through: a unit of work and its repositories.

`async with uow:` rolls back on exit unless `await uow.commit()` was called; repositories
never commit. A unit of work may be entered again after it exits. Adapters implement these
for PostgreSQL, tests implement them in memory.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from consumer.domain.batch import BatchState
from consumer.domain.model import Actor, Order, Professional, ResourceKind, Service, User
from contracts import BatchStatus, ErrorCode, Outcome, RejectionReason


@dataclass(frozen=True, slots=True)
class StoredBatch:
    state: BatchState
    handler: str | None
    fingerprint: bytes
    correlation_id: str | None
    # The completion event, or the rejection event of a rejected batch.
    completion_event: bytes | None
    # The operation an atomic batch was running when last seen (nothing else records it).
    in_hand: int | None = None
    # Why a `rejected` batch was refused.
    code: ErrorCode | None = None
    errors: list[RejectionReason] | None = None
    # The request as accepted (JSON), stored with a claim; `get` leaves it out (see request_of).
    request: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredResult:
    index: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    exchange: str
    routing_key: str
    message_id: UUID
    correlation_id: str | None
    body: bytes
    mandatory: bool = True
    traceparent: str | None = None


class DuplicateResult(Exception):
    """The operation already has a result row (committed by a competing consumer)."""


class BatchCancelled(Exception):
    """A cancel was asked for before this operation's result could commit: it must not take
    effect (roll back), and it and every operation after it are skipped."""


class BatchRepository(abc.ABC):
    @abc.abstractmethod
    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        """Insert `batch` unless its id exists; returns the stored batch and whether it is new
        work. A `pending` batch (stored by the HTTP API before it published the request) or a
        `rejected` one (refused for a reason fixed since), with the same fingerprint, is new
        work too: it becomes `processing` with this start; so is one cancelled in advance (its
        request unknown until now), which keeps its cancel."""

    @abc.abstractmethod
    async def record_rejection(self, batch: StoredBatch) -> bool:
        """Store a `rejected` batch unless its id is taken; a `pending` one with the same
        fingerprint becomes this rejected batch. Returns whether anything was stored."""

    @abc.abstractmethod
    async def get(self, batch_id: UUID, *, for_update: bool = False) -> StoredBatch | None: ...

    @abc.abstractmethod
    async def request_of(self, batch_id: UUID) -> dict[str, Any] | None:
        """The request as the batch was accepted (JSON), when it was stored."""

    @abc.abstractmethod
    async def results(self, batch_id: UUID) -> list[StoredResult]: ...

    @abc.abstractmethod
    async def result_events(self, batch_id: UUID) -> list[bytes]:
        """Every operation event of the batch, in index order."""

    @abc.abstractmethod
    async def add_result(
        self,
        batch_id: UUID,
        index: int,
        resource_id: int,
        outcome: Outcome,
        status: int,
        error_code: str | None,
        event: bytes,
        announcement: OutboxMessage | None,
        *,
        cancellable: bool,
    ) -> None:
        """Record one result, count it and queue its event (`announcement`, None for a dry
        run's) for the relay. Raises DuplicateResult when the index already has a result, and
        BatchCancelled, when `cancellable` (the result of an operation that ran), if a cancel
        of the batch was committed first."""

    @abc.abstractmethod
    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        """Note, outside the batch's own transaction, which operation runs now. Raises
        BatchCancelled when a cancel of the batch was asked for."""

    @abc.abstractmethod
    async def request_cancel(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        """Ask the (stored, unfinished) batch to stop before its next operation."""

    @abc.abstractmethod
    async def cancel_in_advance(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        """Record the cancel of a batch nobody has seen yet: when its request arrives, it runs
        nothing (see claim)."""

    @abc.abstractmethod
    async def complete(
        self, batch_id: UUID, status: BatchStatus, completed_at: datetime, completion_event: bytes
    ) -> None: ...


class MarketplaceRepository(abc.ABC):
    @abc.abstractmethod
    async def get_actor(self, user_id: int) -> Actor | None:
        """The user, or None when unknown or deleted."""

    @abc.abstractmethod
    async def get_order_for_update(self, order_id: int) -> Order | None:
        """Lock and return the order, or None when missing or deleted."""

    @abc.abstractmethod
    async def save_order(self, order: Order) -> None: ...

    @abc.abstractmethod
    async def get_professional_for_update(self, professional_id: int) -> Professional | None: ...

    @abc.abstractmethod
    async def save_professional(self, professional: Professional) -> None: ...

    @abc.abstractmethod
    async def get_service_for_update(self, service_id: int) -> Service | None: ...

    @abc.abstractmethod
    async def save_service(self, service: Service) -> None: ...

    @abc.abstractmethod
    async def get_user_for_update(self, user_id: int) -> User | None: ...

    @abc.abstractmethod
    async def save_user(self, user: User) -> None: ...

    @abc.abstractmethod
    async def email_taken(self, email: str, *, by_other_than: int) -> bool:
        """True when a user other than `by_other_than` has `email` (case-insensitively)."""

    @abc.abstractmethod
    async def soft_delete(self, kind: ResourceKind, resource_id: int) -> bool:
        """Mark the resource deleted; False when it is missing or already deleted."""


class OutboxRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, message: OutboxMessage) -> None: ...

    @abc.abstractmethod
    async def body_of(self, message_id: UUID) -> bytes | None:
        """The body already queued under this event id, if any (to re-send it unchanged)."""


class AbstractUnitOfWork(abc.ABC):
    batches: BatchRepository
    marketplace: MarketplaceRepository
    outbox: OutboxRepository

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    @abc.abstractmethod
    async def commit(self, *, chain: bool = False) -> None:
        """Commit. `chain=True` also opens the next transaction, in the same round trip, for a
        unit of work entered again right away (`async with uow:` once more); it then keeps its
        connection between the two until `close()`."""

    @abc.abstractmethod
    async def rollback(self) -> None: ...

    async def flush(self) -> None:  # noqa: B027 - optional: only adapters that hold writes back
        """Run now any write held back to ride along with the next statement."""

    @abc.abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A savepoint in the open transaction: what the block wrote is undone when it raises
        (and the exception goes on), kept when it ends normally."""

    async def close(self) -> None:  # noqa: B027 - optional: only adapters that keep something
        """Give back what a chained commit kept (nothing otherwise)."""
