"""In-memory unit of work for the service layer: staged changes become visible only on commit.

`FakeDatabase` is what has been committed; every `FakeUnitOfWork` stages its writes and
applies them to the database on `commit()`, or drops them on `rollback()` and on leaving
`async with` uncommitted. Objects handed out are copies, so a handler that mutates an order
and then fails cannot leak the change past a rollback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any
from uuid import UUID

from consumer.domain.batch import BatchState
from consumer.domain.model import (
    Actor,
    Order,
    OrderStatus,
    Professional,
    ResourceKind,
    Role,
    Service,
    User,
)
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.faults import DatabaseUnavailable, Fault
from consumer.service_layer.retry import RetryPolicy, Transactions, instrument_retries
from consumer.service_layer.unit_of_work import (
    AbstractUnitOfWork,
    BatchCancelled,
    BatchRepository,
    DuplicateResult,
    MarketplaceRepository,
    OutboxMessage,
    OutboxRepository,
    StoredBatch,
    StoredResult,
)
from contracts import BatchStatus, Mode, Outcome

# The fingerprint of a batch cancelled before anybody saw its request (as the SQL adapter).
UNKNOWN_REQUEST = bytes(32)


class TransientFault(Exception):
    """What the fake database raises for a fault worth retrying (a deadlock, a disconnect)."""


class ConnectionLost(Exception):
    """What a unit of work connected before an outage raises when it commits after it."""


@dataclass(frozen=True, slots=True)
class ResultRow:
    batch_id: UUID
    index: int
    resource_id: int
    outcome: Outcome
    status: int
    error_code: str | None
    event: bytes


@dataclass(slots=True)
class FakeDatabase:
    """The committed state every unit of work reads and commits to."""

    actors: dict[int, Actor] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    professionals: dict[int, Professional] = field(default_factory=dict)
    services: dict[int, Service] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    deleted: set[tuple[ResourceKind, int]] = field(default_factory=set)
    batches: dict[UUID, StoredBatch] = field(default_factory=dict)
    results: dict[tuple[UUID, int], ResultRow] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    commits: int = 0
    # An outage: while True, no unit of work can connect and the probe fails.
    down: bool = False
    # Outages so far: a unit of work connected before one finds its connection dead.
    outages: int = 0

    def go_down(self) -> None:
        self.down = True
        self.outages += 1

    def results_of(self, batch_id: UUID) -> list[ResultRow]:
        rows = [row for (bid, _), row in self.results.items() if bid == batch_id]
        return sorted(rows, key=lambda row: row.index)


def demo_marketplace(order_count: int = 10) -> FakeDatabase:
    """The `batchops seed` marketplace of docs/contract.md ("Demo data"): users 1 admin,
    2 staff, 3–5 clients, 6–8 professionals (professional k is user 5 + k); order i is pending
    at 100.00."""
    actors = {1: Actor(1, Role.ADMIN, is_active=True), 2: Actor(2, Role.STAFF, is_active=True)}
    actors |= {uid: Actor(uid, Role.CLIENT, is_active=True) for uid in (3, 4, 5)}
    actors |= {uid: Actor(uid, Role.PROFESSIONAL, is_active=True) for uid in (6, 7, 8)}
    orders = {}
    for i in range(1, order_count + 1):
        professional_id = 1 + i % 3
        orders[i] = Order(
            id=i,
            client_id=3 + i % 3,
            professional_id=professional_id,
            professional_user_id=5 + professional_id,
            service_id=2 * professional_id - 1,
            status=OrderStatus.PENDING,
            notes="",
            price=Decimal("100.00"),
        )
    users = {
        actor.id: User(
            actor.id,
            f"User {actor.id}",
            f"user{actor.id}@example.com",
            None,
            actor.role,
            actor.is_active,
        )
        for actor in actors.values()
    }
    professionals = {
        k: Professional(k, 5 + k, k == 1, k == 1, 1 if k == 1 else None, None, None)
        for k in (1, 2, 3)
    }
    services = {
        sid: Service(
            sid,
            (sid + 1) // 2,
            5 + (sid + 1) // 2,
            f"Service {sid}",
            "",
            Decimal("100.00"),
            "general",
            True,
        )
        for sid in range(1, 7)
    }
    return FakeDatabase(
        actors=actors, orders=orders, professionals=professionals, services=services, users=users
    )


def copy_batch(batch: StoredBatch) -> StoredBatch:
    return replace(batch, state=replace(batch.state))


@dataclass(slots=True)
class _Staged:
    batches: dict[UUID, StoredBatch] = field(default_factory=dict)
    results: dict[tuple[UUID, int], ResultRow] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    professionals: dict[int, Professional] = field(default_factory=dict)
    services: dict[int, Service] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    deleted: set[tuple[ResourceKind, int]] = field(default_factory=set)
    outbox: list[OutboxMessage] = field(default_factory=list)
    active: bool = False
    # Like PostgreSQL after a failed statement: nothing more until a rollback.
    aborted: bool = False

    def clear(self) -> None:
        self.batches.clear()
        self.results.clear()
        self.orders.clear()
        self.professionals.clear()
        self.services.clear()
        self.users.clear()
        self.deleted.clear()
        self.outbox.clear()
        self.aborted = False

    def check(self) -> None:
        if not self.active:
            raise RuntimeError("use the unit of work as `async with uow:`")
        if self.aborted:
            raise RuntimeError("current transaction is aborted until the end of the block")


class FakeBatchRepository(BatchRepository):
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db = db
        self._staged = staged

    def _current(self, batch_id: UUID) -> StoredBatch | None:
        if batch_id in self._staged.batches:
            return self._staged.batches[batch_id]
        return self._db.batches.get(batch_id)

    def _rows(self, batch_id: UUID) -> list[ResultRow]:
        rows = {**self._db.results, **self._staged.results}
        return sorted(
            (row for (bid, _), row in rows.items() if bid == batch_id), key=lambda r: r.index
        )

    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        self._staged.check()
        existing = self._current(batch.state.batch_id)
        if existing is None:
            self._staged.batches[batch.state.batch_id] = copy_batch(batch)
            return batch, True
        if existing.state.status not in (
            BatchStatus.PENDING,
            BatchStatus.REJECTED,
        ) or existing.fingerprint not in (batch.fingerprint, UNKNOWN_REQUEST):
            return copy_batch(existing), False
        # Like the SQL adapter: the request's columns, but a cancel asked for in advance stays.
        taken = replace(copy_batch(batch), correlation_id=existing.correlation_id)
        taken.state.created_at = existing.state.created_at
        taken.state.cancel_requested = existing.state.cancel_requested
        self._staged.batches[batch.state.batch_id] = taken
        return copy_batch(taken), True

    async def record_rejection(self, batch: StoredBatch) -> bool:
        self._staged.check()
        existing = self._current(batch.state.batch_id)
        if existing is not None and (
            existing.state.status is not BatchStatus.PENDING
            or existing.fingerprint != batch.fingerprint
        ):
            return False
        self._staged.batches[batch.state.batch_id] = copy_batch(batch)
        return True

    async def get(
        self,
        batch_id: UUID,
        *,
        for_update: bool = False,
    ) -> StoredBatch | None:
        self._staged.check()
        existing = self._current(batch_id)
        return None if existing is None else copy_batch(existing)

    async def request_of(self, batch_id: UUID) -> dict[str, Any] | None:
        self._staged.check()
        existing = self._current(batch_id)
        return None if existing is None else existing.request

    async def results(self, batch_id: UUID) -> list[StoredResult]:
        self._staged.check()
        return [StoredResult(row.index, row.outcome) for row in self._rows(batch_id)]

    async def result_events(self, batch_id: UUID) -> list[bytes]:
        self._staged.check()
        return [row.event for row in self._rows(batch_id)]

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
        self._staged.check()
        key = (batch_id, index)
        if key in self._db.results or key in self._staged.results:
            self._staged.aborted = True
            raise DuplicateResult(f"batch {batch_id} operation {index}")
        batch = self._current(batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} has no row for its results")
        if cancellable and batch.state.cancel_requested:
            raise BatchCancelled(f"batch {batch_id} was cancelled before operation {index}")
        self._staged.results[key] = ResultRow(
            batch_id, index, resource_id, outcome, status, error_code, event
        )
        # Counted like the SQL adapter does: a column update, not BatchState.add_result.
        counted = copy_batch(batch)
        if outcome is Outcome.SUCCEEDED:
            counted.state.completed += 1
        elif outcome is Outcome.FAILED:
            counted.state.failed += 1
        else:
            counted.state.skipped += 1
        self._staged.batches[batch_id] = counted
        if announcement is not None:
            self._staged.outbox.append(announcement)

    async def complete(
        self, batch_id: UUID, status: BatchStatus, completed_at: datetime, completion_event: bytes
    ) -> None:
        self._staged.check()
        batch = self._current(batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} does not exist")
        completed = replace(copy_batch(batch), completion_event=completion_event)
        completed.state.status = status
        completed.state.completed_at = completed_at
        self._staged.batches[batch_id] = completed

    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        self._staged.check()
        batch = self._current(batch_id)
        if batch is not None:
            if batch.state.cancel_requested:
                raise BatchCancelled(f"batch {batch_id} was cancelled before operation {index}")
            self._staged.batches[batch_id] = replace(copy_batch(batch), in_hand=index)

    async def request_cancel(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        self._staged.check()
        batch = self._current(batch_id)
        if batch is not None:
            cancelled = copy_batch(batch)
            cancelled.state.cancel_requested = True
            self._staged.batches[batch_id] = cancelled

    async def cancel_in_advance(self, batch_id: UUID, by: int | None, at: datetime) -> None:
        self._staged.check()
        if self._current(batch_id) is not None:
            await self.request_cancel(batch_id, by, at)
            return
        placeholder = BatchState(
            batch_id=batch_id,
            operation_type="unknown",
            actor_id=by or 0,
            mode=Mode.CONTINUE,
            total=0,
            created_at=at,
            cancel_requested=True,
        )
        self._staged.batches[batch_id] = StoredBatch(placeholder, None, UNKNOWN_REQUEST, None, None)


class FakeMarketplaceRepository(MarketplaceRepository):
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db = db
        self._staged = staged

    async def get_actor(self, user_id: int) -> Actor | None:
        self._staged.check()
        if self._is_deleted(ResourceKind.USER, user_id):
            return None  # like the real repository: a soft-deleted user is unknown
        return self._db.actors.get(user_id)

    def _is_deleted(self, kind: ResourceKind, resource_id: int) -> bool:
        key = (kind, resource_id)
        return key in self._db.deleted or key in self._staged.deleted

    async def get_order_for_update(self, order_id: int) -> Order | None:
        self._staged.check()
        if self._is_deleted(ResourceKind.ORDER, order_id):
            return None
        order = self._staged.orders.get(order_id, self._db.orders.get(order_id))
        return None if order is None else replace(order)

    async def save_order(self, order: Order) -> None:
        self._staged.check()
        self._staged.orders[order.id] = replace(order)

    async def get_professional_for_update(self, professional_id: int) -> Professional | None:
        self._staged.check()
        if self._is_deleted(ResourceKind.PROFESSIONAL, professional_id):
            return None
        found = self._staged.professionals.get(
            professional_id, self._db.professionals.get(professional_id)
        )
        return None if found is None else replace(found)

    async def save_professional(self, professional: Professional) -> None:
        self._staged.check()
        self._staged.professionals[professional.id] = replace(professional)

    async def get_service_for_update(self, service_id: int) -> Service | None:
        self._staged.check()
        if self._is_deleted(ResourceKind.SERVICE, service_id):
            return None
        found = self._staged.services.get(service_id, self._db.services.get(service_id))
        return None if found is None else replace(found)

    async def save_service(self, service: Service) -> None:
        self._staged.check()
        self._staged.services[service.id] = replace(service)

    async def get_user_for_update(self, user_id: int) -> User | None:
        self._staged.check()
        if self._is_deleted(ResourceKind.USER, user_id):
            return None
        found = self._staged.users.get(user_id, self._db.users.get(user_id))
        return None if found is None else replace(found)

    async def save_user(self, user: User) -> None:
        self._staged.check()
        self._staged.users[user.id] = replace(user)

    async def email_taken(self, email: str, *, by_other_than: int) -> bool:
        self._staged.check()
        users = {**self._db.users, **self._staged.users}
        return any(
            u.email.lower() == email.lower() and u.id != by_other_than for u in users.values()
        )

    async def soft_delete(self, kind: ResourceKind, resource_id: int) -> bool:
        self._staged.check()
        ids: dict[ResourceKind, set[int]] = {
            ResourceKind.ORDER: set(self._db.orders),
            ResourceKind.PROFESSIONAL: set(self._db.professionals),
            ResourceKind.SERVICE: set(self._db.services),
            ResourceKind.USER: set(self._db.users),
        }
        if resource_id not in ids[kind] or self._is_deleted(kind, resource_id):
            return False
        self._staged.deleted.add((kind, resource_id))
        return True


class FakeOutboxRepository(OutboxRepository):
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db = db
        self._staged = staged

    async def add(self, message: OutboxMessage) -> None:
        self._staged.check()
        self._staged.outbox.append(message)

    async def body_of(self, message_id: UUID) -> bytes | None:
        self._staged.check()
        queued = [*self._db.outbox, *self._staged.outbox]
        return next((m.body for m in queued if m.message_id == message_id), None)


class FakeUnitOfWork(AbstractUnitOfWork):
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self._staged = _Staged()
        self.batches = FakeBatchRepository(db, self._staged)
        self.marketplace = FakeMarketplaceRepository(db, self._staged)
        self.outbox = FakeOutboxRepository(db, self._staged)
        self._connected_since = db.outages

    async def __aenter__(self) -> FakeUnitOfWork:
        if self.db.down:
            raise DatabaseUnavailable("the fake database is down")
        if self._staged.active:
            raise RuntimeError("this unit of work is already in use")
        self._staged.clear()
        self._staged.active = True
        self._connected_since = self.db.outages
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        self._staged.active = False

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        staged = self._staged
        kept = (
            dict(staged.batches),
            dict(staged.results),
            dict(staged.orders),
            dict(staged.professionals),
            dict(staged.services),
            dict(staged.users),
            set(staged.deleted),
            list(staged.outbox),
        )
        try:
            yield
        except BaseException:
            (
                staged.batches,
                staged.results,
                staged.orders,
                staged.professionals,
                staged.services,
                staged.users,
                staged.deleted,
                staged.outbox,
            ) = kept
            raise

    async def commit(self, *, chain: bool = False) -> None:
        if self._connected_since != self.db.outages:
            raise ConnectionLost("the connection died in an outage")
        self._staged.check()
        self.db.batches.update(self._staged.batches)
        self.db.results.update(self._staged.results)
        self.db.orders.update(self._staged.orders)
        self.db.professionals.update(self._staged.professionals)
        self.db.services.update(self._staged.services)
        self.db.users.update(self._staged.users)
        self.db.deleted |= self._staged.deleted
        self.db.outbox.extend(self._staged.outbox)
        self.db.commits += 1
        self._staged.clear()

    async def rollback(self) -> None:
        if not self._staged.active:
            raise RuntimeError("use the unit of work as `async with uow:`")
        self._staged.clear()


def fake_classify(exc: BaseException) -> Fault:
    """The fake database's faults: TransientFault is a refusal, a connection that outlived an
    outage is lost, an outage is unreachable."""
    if isinstance(exc, DatabaseUnavailable):
        return Fault.UNREACHABLE
    if isinstance(exc, ConnectionLost):
        return Fault.LOST
    return Fault.REFUSED if isinstance(exc, TransientFault) else Fault.BUG


QUICK_RETRY = RetryPolicy(timeout_seconds=5, base_seconds=0.0001, max_seconds=0.0005, attempts=3)


def transactions_for(db: FakeDatabase, policy: RetryPolicy = QUICK_RETRY) -> Transactions:
    """Units of work on `db`, retried as in production, with an outage prober that polls fast."""

    async def probe() -> None:
        if db.down:
            raise DatabaseUnavailable("the fake database is down")

    availability = DatabaseAvailability(probe, probe_initial_seconds=0.001, probe_max_seconds=0.005)
    instrument_retries(fake_classify)
    return Transactions(lambda: FakeUnitOfWork(db), fake_classify, availability, policy)
