"""PostgreSQL implementations of the repositories: SQLAlchemy Core statements, built and
compiled once with bind parameters (see pg.py), run on the unit of work's asyncpg session."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import Column, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from consumer.adapters.pg import Deferrable, Record, Session, Statement
from consumer.adapters.queries import batch_state
from consumer.adapters.tables import (
    batch_operations,
    operation_results,
    orders,
    outbox,
    professionals,
    services,
    users,
)
from consumer.domain.errors import Conflict
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
from consumer.service_layer.unit_of_work import (
    BatchRepository,
    DuplicateResult,
    MarketplaceRepository,
    OutboxMessage,
    OutboxRepository,
    StoredBatch,
    StoredResult,
)
from contracts import BatchStatus, Outcome

_RESULTS_PK = "pk_operation_results"
# The time of the write itself: `now()` is the transaction's start, which a chained commit
# (see pg.Session.commit) moves back to the previous operation's commit.
_NOW = func.statement_timestamp()
_USERS_EMAIL = "uq_users_email"


def _where_id(table: Table, *, live: bool = True) -> Any:
    condition = table.c.id == bindparam("id")
    return condition & table.c.deleted_at.is_(None) if live else condition


# -- batches --------------------------------------------------------------------------------

_CLAIMED_COLUMNS = (
    "batch_id",
    "operation_type",
    "handler",
    "actor_id",
    "mode",
    "status",
    "total_operations",
    "fingerprint",
    "correlation_id",
    "created_at",
    "started_at",
)
_CLAIM = Statement(
    pg_insert(batch_operations)
    .values({name: bindparam(name) for name in _CLAIMED_COLUMNS})
    .on_conflict_do_nothing(index_elements=[batch_operations.c.batch_id])
    .returning(batch_operations.c.batch_id)
)
# Taken over by the consumer of the same request: a batch the HTTP API stored as `pending`
# before publishing it, or one refused earlier for a reason fixed since (never executed).
_TAKE_OVER = Statement(
    update(batch_operations)
    .where(
        (batch_operations.c.batch_id == bindparam("batch_id"))
        & (
            (batch_operations.c.status == BatchStatus.PENDING.value)
            | (batch_operations.c.status == BatchStatus.REJECTED.value)
        )
        & (batch_operations.c.fingerprint == bindparam("fingerprint"))
    )
    .values(
        status=BatchStatus.PROCESSING.value,
        started_at=bindparam("started_at"),
        total_operations=bindparam("total_operations"),  # a rejected batch counted none
        completed_at=None,
        completion_event=None,
        code=None,
        errors=None,
    )
    .returning(batch_operations.c.batch_id)
)
_REJECTED_COLUMNS = (*_CLAIMED_COLUMNS, "completed_at", "completion_event", "code", "errors")
_rejected = pg_insert(batch_operations).values(
    {name: bindparam(name) for name in _REJECTED_COLUMNS}
)
_RECORD_REJECTION = Statement(
    _rejected.on_conflict_do_update(
        index_elements=[batch_operations.c.batch_id],
        set_={
            name: _rejected.excluded[name]
            for name in ("status", "completed_at", "completion_event", "code", "errors")
        },
        where=(batch_operations.c.status == BatchStatus.PENDING.value)
        & (batch_operations.c.fingerprint == _rejected.excluded.fingerprint),
    ).returning(batch_operations.c.batch_id)
)
_BATCH = select(batch_operations).where(batch_operations.c.batch_id == bindparam("batch_id"))
_GET_BATCH = Statement(_BATCH)
_GET_BATCH_FOR_UPDATE = Statement(_BATCH.with_for_update())
_RESULTS = Statement(
    select(operation_results.c.index, operation_results.c.outcome)
    .where(operation_results.c.batch_id == bindparam("batch_id"))
    .order_by(operation_results.c.index)
)
_RESULT_EVENTS = Statement(
    select(operation_results.c.event)
    .where(operation_results.c.batch_id == bindparam("batch_id"))
    .order_by(operation_results.c.index)
)
_UPDATE_BATCH = update(batch_operations).where(batch_operations.c.batch_id == bindparam("batch_id"))
_MARK_IN_HAND = Statement(_UPDATE_BATCH.values(in_hand=bindparam("in_hand")))
_COMPLETE = Statement(
    _UPDATE_BATCH.values(
        status=bindparam("status"),
        completed_at=bindparam("completed_at"),
        completion_event=bindparam("completion_event"),
    )
)


# The marketplace writes that ride along in the statement recording the result (see Deferrable;
# users are not among them: their email is unique, and that refusal belongs to the handler).
_ORDER_SAVE = update(orders).values(
    status=bindparam("e_status"),
    notes=bindparam("e_notes"),
    price=bindparam("e_price"),
    updated_at=_NOW,
)
_PROFESSIONAL_SAVE = update(professionals).values(
    approved=bindparam("e_approved"),
    verified=bindparam("e_verified"),
    approved_by=bindparam("e_approved_by"),
    approved_at=bindparam("e_approved_at"),
    approval_reason=bindparam("e_approval_reason"),
    updated_at=_NOW,
)
_SERVICE_SAVE = update(services).values(
    name=bindparam("e_name"),
    description=bindparam("e_description"),
    price=bindparam("e_price"),
    category=bindparam("e_category"),
    is_active=bindparam("e_is_active"),
    updated_at=_NOW,
)
_SAVES = {
    "order": _ORDER_SAVE.where(orders.c.id == bindparam("e_id")),
    "professional": _PROFESSIONAL_SAVE.where(professionals.c.id == bindparam("e_id")),
    "service": _SERVICE_SAVE.where(services.c.id == bindparam("e_id")),
}
_DEFERRED_SAVE = {key: Deferrable(key, Statement(save)) for key, save in _SAVES.items()}


def _recording(counter: Column[int]) -> dict[str | None, Statement]:
    """The result row, its event's outbox row and the batch counter in one statement; with a
    variant per deferred write that may ride along."""
    result = insert(operation_results).values(
        batch_id=bindparam("batch_id"),
        index=bindparam("index"),
        resource_id=bindparam("resource_id"),
        outcome=bindparam("outcome"),
        status_code=bindparam("status"),
        error_code=bindparam("error_code"),
        event=bindparam("event"),
    )
    announcement = insert(outbox).values(
        exchange=bindparam("o_exchange"),
        routing_key=bindparam("o_routing_key"),
        message_id=bindparam("o_message_id"),
        correlation_id=bindparam("o_correlation_id"),
        body=bindparam("o_body"),
        mandatory=bindparam("o_mandatory"),
        traceparent=bindparam("o_traceparent"),
    )
    record = _UPDATE_BATCH.values({counter: counter + 1}).add_cte(
        result.cte("result"), announcement.cte("announcement")
    )
    variants: dict[str | None, Statement] = {None: Statement(record)}
    for key, save in _SAVES.items():
        variants[key] = Statement(record.add_cte(save.cte("effect")))
    return variants


_RECORD = {
    Outcome.SUCCEEDED: _recording(batch_operations.c.completed_operations),
    Outcome.FAILED: _recording(batch_operations.c.failed_operations),
    Outcome.SKIPPED: _recording(batch_operations.c.skipped_operations),
}

# -- the marketplace -------------------------------------------------------------------------

_ACTOR = Statement(select(users.c.id, users.c.role, users.c.is_active).where(_where_id(users)))
_ORDER_FOR_UPDATE = Statement(
    select(
        orders.c.id,
        orders.c.client_id,
        orders.c.professional_id,
        orders.c.service_id,
        orders.c.status,
        orders.c.notes,
        orders.c.price,
        professionals.c.user_id.label("professional_user_id"),
    )
    .join(professionals, professionals.c.id == orders.c.professional_id)
    .where(_where_id(orders))
    .with_for_update(of=orders)
)
_PROFESSIONAL_FOR_UPDATE = Statement(
    select(professionals).where(_where_id(professionals)).with_for_update()
)
_SERVICE_FOR_UPDATE = Statement(
    select(services, professionals.c.user_id.label("professional_user_id"))
    .join(professionals, professionals.c.id == services.c.professional_id)
    .where(_where_id(services))
    .with_for_update(of=services)
)
_USER_FOR_UPDATE = Statement(select(users).where(_where_id(users)).with_for_update())
_SAVE_USER = Statement(
    update(users)
    .where(users.c.id == bindparam("id"))
    .values(
        name=bindparam("name"),
        email=bindparam("email"),
        phone=bindparam("phone"),
        role=bindparam("role"),
        is_active=bindparam("is_active"),
        updated_at=_NOW,
    )
)
_EMAIL_TAKEN = Statement(
    select(users.c.id).where(
        func.lower(users.c.email) == bindparam("email", type_=users.c.email.type),
        users.c.id != bindparam("id"),
    )
)
_SOFT_DELETE = {
    kind: Statement(
        update(table)
        .where(_where_id(table))
        .values(deleted_at=_NOW, updated_at=_NOW)
        .returning(table.c.id)
    )
    for kind, table in {
        ResourceKind.ORDER: orders,
        ResourceKind.SERVICE: services,
        ResourceKind.PROFESSIONAL: professionals,
        ResourceKind.USER: users,
    }.items()
}

# -- the outbox ------------------------------------------------------------------------------

_ADD_TO_OUTBOX = Statement(
    insert(outbox).values(
        exchange=bindparam("exchange"),
        routing_key=bindparam("routing_key"),
        message_id=bindparam("message_id"),
        correlation_id=bindparam("correlation_id"),
        body=bindparam("body"),
        mandatory=bindparam("mandatory"),
        traceparent=bindparam("traceparent"),
    )
)
_BODY_OF = Statement(
    select(outbox.c.body).where(outbox.c.message_id == bindparam("message_id")).limit(1)
)


class SqlBatchRepository(BatchRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        state = batch.state
        inserted = await self._session.fetchval(_CLAIM, _claimed_columns(batch))
        if inserted is not None:
            return batch, True
        taken_over = await self._session.fetchval(
            _TAKE_OVER,
            {
                "batch_id": state.batch_id,
                "fingerprint": batch.fingerprint,
                "started_at": state.started_at,
                "total_operations": state.total,
            },
        )
        existing = await self.get(state.batch_id)
        if existing is None:  # deleted between the two statements by cleanup
            raise LookupError(f"batch {state.batch_id} disappeared while being claimed")
        return existing, taken_over is not None

    async def record_rejection(self, batch: StoredBatch) -> bool:
        errors = [reason.model_dump(mode="json") for reason in batch.errors or []]
        stored = await self._session.fetchval(
            _RECORD_REJECTION,
            {
                **_claimed_columns(batch),
                "completed_at": batch.state.completed_at,
                "completion_event": batch.completion_event,
                "code": batch.code.value if batch.code else None,
                "errors": json.dumps(errors),
            },
        )
        return stored is not None

    async def get(self, batch_id: UUID, *, for_update: bool = False) -> StoredBatch | None:
        query = _GET_BATCH_FOR_UPDATE if for_update else _GET_BATCH
        row = await self._session.fetchrow(query, {"batch_id": batch_id})
        return None if row is None else _stored_batch(row)

    async def results(self, batch_id: UUID) -> list[StoredResult]:
        rows = await self._session.fetch(_RESULTS, {"batch_id": batch_id})
        return [StoredResult(index, Outcome(outcome)) for index, outcome in rows]

    async def result_events(self, batch_id: UUID) -> list[bytes]:
        rows = await self._session.fetch(_RESULT_EVENTS, {"batch_id": batch_id})
        return [row[0] for row in rows]

    async def add_result(
        self,
        batch_id: UUID,
        index: int,
        resource_id: int,
        outcome: Outcome,
        status: int,
        error_code: str | None,
        event: bytes,
        announcement: OutboxMessage,
    ) -> None:
        parameters = {
            "batch_id": batch_id,
            "index": index,
            "resource_id": resource_id,
            "outcome": outcome.value,
            "status": status,
            "error_code": error_code,
            "event": event,
            "o_exchange": announcement.exchange,
            "o_routing_key": announcement.routing_key,
            "o_message_id": announcement.message_id,
            "o_correlation_id": announcement.correlation_id,
            "o_body": announcement.body,
            "o_mandatory": announcement.mandatory,
            "o_traceparent": announcement.traceparent,
        }
        try:
            await self._session.execute_with_deferred(_RECORD[outcome], parameters)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == _RESULTS_PK:
                raise DuplicateResult(f"batch {batch_id} operation {index}") from exc
            raise

    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        await self._session.execute(_MARK_IN_HAND, {"batch_id": batch_id, "in_hand": index})

    async def complete(
        self, batch_id: UUID, status: BatchStatus, completed_at: datetime, completion_event: bytes
    ) -> None:
        await self._session.execute(
            _COMPLETE,
            {
                "batch_id": batch_id,
                "status": status.value,
                "completed_at": completed_at,
                "completion_event": completion_event,
            },
        )


def _claimed_columns(batch: StoredBatch) -> dict[str, object]:
    state = batch.state
    return {
        "batch_id": state.batch_id,
        "operation_type": state.operation_type,
        "handler": batch.handler,
        "actor_id": state.actor_id,
        "mode": state.mode.value,
        "status": state.status.value,
        "total_operations": state.total,
        "fingerprint": batch.fingerprint,
        "correlation_id": batch.correlation_id,
        "created_at": state.created_at,
        "started_at": state.started_at,
    }


def _stored_batch(row: Record) -> StoredBatch:
    state = batch_state(row)
    return StoredBatch(
        state=state,
        handler=row["handler"],
        fingerprint=row["fingerprint"],
        correlation_id=row["correlation_id"],
        completion_event=row["completion_event"],
        in_hand=row["in_hand"],
    )


class SqlMarketplaceRepository(MarketplaceRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def get_actor(self, user_id: int) -> Actor | None:
        row = await self._session.fetchrow(_ACTOR, {"id": user_id})
        return None if row is None else Actor(row["id"], Role(row["role"]), row["is_active"])

    async def get_order_for_update(self, order_id: int) -> Order | None:
        row = await self._session.fetchrow(_ORDER_FOR_UPDATE, {"id": order_id})
        if row is None:
            return None
        return Order(
            id=row["id"],
            client_id=row["client_id"],
            professional_id=row["professional_id"],
            professional_user_id=row["professional_user_id"],
            service_id=row["service_id"],
            status=OrderStatus(row["status"]),
            notes=row["notes"],
            price=row["price"],
        )

    async def save_order(self, order: Order) -> None:
        await self._session.defer(
            _DEFERRED_SAVE["order"],
            {
                "e_id": order.id,
                "e_status": order.status.value,
                "e_notes": order.notes,
                "e_price": order.price,
            },
        )

    async def get_professional_for_update(self, professional_id: int) -> Professional | None:
        row = await self._session.fetchrow(_PROFESSIONAL_FOR_UPDATE, {"id": professional_id})
        if row is None:
            return None
        return Professional(
            id=row["id"],
            user_id=row["user_id"],
            approved=row["approved"],
            verified=row["verified"],
            approved_by=row["approved_by"],
            approved_at=row["approved_at"],
            approval_reason=row["approval_reason"],
        )

    async def save_professional(self, professional: Professional) -> None:
        await self._session.defer(
            _DEFERRED_SAVE["professional"],
            {
                "e_id": professional.id,
                "e_approved": professional.approved,
                "e_verified": professional.verified,
                "e_approved_by": professional.approved_by,
                "e_approved_at": professional.approved_at,
                "e_approval_reason": professional.approval_reason,
            },
        )

    async def get_service_for_update(self, service_id: int) -> Service | None:
        row = await self._session.fetchrow(_SERVICE_FOR_UPDATE, {"id": service_id})
        if row is None:
            return None
        return Service(
            id=row["id"],
            professional_id=row["professional_id"],
            professional_user_id=row["professional_user_id"],
            name=row["name"],
            description=row["description"],
            price=row["price"],
            category=row["category"],
            is_active=row["is_active"],
        )

    async def save_service(self, service: Service) -> None:
        await self._session.defer(
            _DEFERRED_SAVE["service"],
            {
                "e_id": service.id,
                "e_name": service.name,
                "e_description": service.description,
                "e_price": service.price,
                "e_category": service.category,
                "e_is_active": service.is_active,
            },
        )

    async def get_user_for_update(self, user_id: int) -> User | None:
        row = await self._session.fetchrow(_USER_FOR_UPDATE, {"id": user_id})
        if row is None:
            return None
        return User(
            id=row["id"],
            name=row["name"],
            email=row["email"],
            phone=row["phone"],
            role=Role(row["role"]),
            is_active=row["is_active"],
        )

    async def save_user(self, user: User) -> None:
        parameters = {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "phone": user.phone,
            "role": user.role.value,
            "is_active": user.is_active,
        }
        try:
            await self._session.execute(_SAVE_USER, parameters)
        except asyncpg.UniqueViolationError as exc:
            # The handler's email check cannot see a concurrent, uncommitted claim.
            if exc.constraint_name == _USERS_EMAIL:
                raise Conflict("email: another user already has this address") from exc
            raise

    async def email_taken(self, email: str, *, by_other_than: int) -> bool:
        found = await self._session.fetchval(
            _EMAIL_TAKEN, {"email": email.lower(), "id": by_other_than}
        )
        return found is not None

    async def soft_delete(self, kind: ResourceKind, resource_id: int) -> bool:
        deleted = await self._session.fetchval(_SOFT_DELETE[kind], {"id": resource_id})
        return deleted is not None


class SqlOutboxRepository(OutboxRepository):
    def __init__(self, session: Session) -> None:
        self._session = session

    async def add(self, message: OutboxMessage) -> None:
        await self._session.execute(
            _ADD_TO_OUTBOX,
            {
                "exchange": message.exchange,
                "routing_key": message.routing_key,
                "message_id": message.message_id,
                "correlation_id": message.correlation_id,
                "body": message.body,
                "mandatory": message.mandatory,
                "traceparent": message.traceparent,
            },
        )

    async def body_of(self, message_id: UUID) -> bytes | None:
        body: bytes | None = await self._session.fetchval(_BODY_OF, {"message_id": message_id})
        return body
