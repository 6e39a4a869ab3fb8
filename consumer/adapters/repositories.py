"""PostgreSQL implementations of the repositories, with SQLAlchemy Core statements."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import Column, Insert, Update, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters.tables import (
    batch_operations,
    operation_results,
    orders,
    outbox,
    professionals,
    services,
    users,
)
from consumer.domain.batch import BatchState
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
from contracts import BatchStatus, Mode, Outcome

_COUNTER = {
    Outcome.SUCCEEDED: batch_operations.c.completed_operations,
    Outcome.FAILED: batch_operations.c.failed_operations,
    Outcome.SKIPPED: batch_operations.c.skipped_operations,
}
_RESULTS_PK = "pk_operation_results"

# The statements of the per-operation hot path, built once with bind parameters: building and
# cache-keying a statement per call cost more CPU than the round trip it makes.
_ACTOR = select(users.c.id, users.c.role, users.c.is_active).where(
    users.c.id == bindparam("user_id"), users.c.deleted_at.is_(None)
)
_ORDER_FOR_UPDATE = (
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
    .where(orders.c.id == bindparam("order_id"), orders.c.deleted_at.is_(None))
    .with_for_update(of=orders)
)
_SAVE_ORDER = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"))
    .values(
        status=bindparam("new_status"),
        notes=bindparam("new_notes"),
        price=bindparam("new_price"),
        updated_at=func.now(),
    )
)


def _recording(counter: Column[int]) -> Update:
    """The result row, its event's outbox row and the batch counter in one statement."""
    result = insert(operation_results).values(
        batch_id=bindparam("r_batch_id"),
        index=bindparam("r_index"),
        resource_id=bindparam("r_resource_id"),
        outcome=bindparam("r_outcome"),
        status_code=bindparam("r_status"),
        error_code=bindparam("r_error_code"),
        event=bindparam("r_event"),
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
    return (
        update(batch_operations)
        .where(batch_operations.c.batch_id == bindparam("b_batch_id"))
        .values({counter: counter + 1})
        .add_cte(result.cte("result"), announcement.cte("announcement"))
    )


_RECORD = {outcome: _recording(column) for outcome, column in _COUNTER.items()}


class SqlBatchRepository(BatchRepository):
    def __init__(self, session: AsyncConnection) -> None:
        self._session = session

    async def claim(self, batch: StoredBatch) -> tuple[StoredBatch, bool]:
        state = batch.state
        inserted = await self._session.scalar(
            pg_insert(batch_operations)
            .values(
                batch_id=state.batch_id,
                operation_type=state.operation_type,
                handler=batch.handler,
                actor_id=state.actor_id,
                mode=state.mode.value,
                status=state.status.value,
                total_operations=state.total,
                fingerprint=batch.fingerprint,
                correlation_id=batch.correlation_id,
                created_at=state.created_at,
                started_at=state.started_at,
            )
            .on_conflict_do_nothing(index_elements=[batch_operations.c.batch_id])
            .returning(batch_operations.c.batch_id)
        )
        if inserted is not None:
            return batch, True
        existing = await self.get(state.batch_id)
        if existing is None:  # deleted between the two statements by cleanup
            raise LookupError(f"batch {state.batch_id} disappeared while being claimed")
        return existing, False

    async def get(self, batch_id: UUID, *, for_update: bool = False) -> StoredBatch | None:
        query = select(batch_operations).where(batch_operations.c.batch_id == batch_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        state = BatchState(
            batch_id=row["batch_id"],
            operation_type=row["operation_type"],
            actor_id=row["actor_id"],
            mode=Mode(row["mode"]),
            total=row["total_operations"],
            created_at=row["created_at"],
            status=BatchStatus(row["status"]),
            completed=row["completed_operations"],
            failed=row["failed_operations"],
            skipped=row["skipped_operations"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
        )
        return StoredBatch(
            state=state,
            handler=row["handler"],
            fingerprint=row["fingerprint"],
            correlation_id=row["correlation_id"],
            completion_event=row["completion_event"],
            in_hand=row["in_hand"],
        )

    async def results(self, batch_id: UUID) -> list[StoredResult]:
        rows = await self._session.execute(
            select(operation_results.c.index, operation_results.c.outcome)
            .where(operation_results.c.batch_id == batch_id)
            .order_by(operation_results.c.index)
        )
        return [StoredResult(index, Outcome(outcome)) for index, outcome in rows]

    async def result_events(self, batch_id: UUID) -> list[bytes]:
        rows = await self._session.scalars(
            select(operation_results.c.event)
            .where(operation_results.c.batch_id == batch_id)
            .order_by(operation_results.c.index)
        )
        return list(rows)

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
            "b_batch_id": batch_id,
            "r_batch_id": batch_id,
            "r_index": index,
            "r_resource_id": resource_id,
            "r_outcome": outcome.value,
            "r_status": status,
            "r_error_code": error_code,
            "r_event": event,
            "o_exchange": announcement.exchange,
            "o_routing_key": announcement.routing_key,
            "o_message_id": announcement.message_id,
            "o_correlation_id": announcement.correlation_id,
            "o_body": announcement.body,
            "o_mandatory": announcement.mandatory,
            "o_traceparent": announcement.traceparent,
        }
        try:
            await self._session.execute(_RECORD[outcome], parameters)
        except IntegrityError as exc:
            if _RESULTS_PK in str(exc.orig):
                raise DuplicateResult(f"batch {batch_id} operation {index}") from exc
            raise

    async def mark_in_hand(self, batch_id: UUID, index: int) -> None:
        await self._session.execute(
            update(batch_operations)
            .where(batch_operations.c.batch_id == batch_id)
            .values(in_hand=index)
        )

    async def complete(
        self, batch_id: UUID, status: BatchStatus, completed_at: datetime, completion_event: bytes
    ) -> None:
        await self._session.execute(
            update(batch_operations)
            .where(batch_operations.c.batch_id == batch_id)
            .values(
                status=status.value, completed_at=completed_at, completion_event=completion_event
            )
        )


class SqlMarketplaceRepository(MarketplaceRepository):
    def __init__(self, session: AsyncConnection) -> None:
        self._session = session

    async def get_actor(self, user_id: int) -> Actor | None:
        row = (await self._session.execute(_ACTOR, {"user_id": user_id})).one_or_none()
        return None if row is None else Actor(row.id, Role(row.role), row.is_active)

    async def get_order_for_update(self, order_id: int) -> Order | None:
        row = (await self._session.execute(_ORDER_FOR_UPDATE, {"order_id": order_id})).one_or_none()
        if row is None:
            return None
        return Order(
            id=row.id,
            client_id=row.client_id,
            professional_id=row.professional_id,
            professional_user_id=row.professional_user_id,
            service_id=row.service_id,
            status=OrderStatus(row.status),
            notes=row.notes,
            price=row.price,
        )

    async def save_order(self, order: Order) -> None:
        await self._session.execute(
            _SAVE_ORDER,
            {
                "order_id": order.id,
                "new_status": order.status.value,
                "new_notes": order.notes,
                "new_price": order.price,
            },
        )

    async def get_professional_for_update(self, professional_id: int) -> Professional | None:
        row = (
            await self._session.execute(
                select(professionals)
                .where(professionals.c.id == professional_id, professionals.c.deleted_at.is_(None))
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            return None
        return Professional(
            id=row.id,
            user_id=row.user_id,
            approved=row.approved,
            verified=row.verified,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
            approval_reason=row.approval_reason,
        )

    async def save_professional(self, professional: Professional) -> None:
        await self._session.execute(
            update(professionals)
            .where(professionals.c.id == professional.id)
            .values(
                approved=professional.approved,
                verified=professional.verified,
                approved_by=professional.approved_by,
                approved_at=professional.approved_at,
                approval_reason=professional.approval_reason,
                updated_at=func.now(),
            )
        )

    async def get_service_for_update(self, service_id: int) -> Service | None:
        row = (
            await self._session.execute(
                select(services, professionals.c.user_id.label("professional_user_id"))
                .join(professionals, professionals.c.id == services.c.professional_id)
                .where(services.c.id == service_id, services.c.deleted_at.is_(None))
                .with_for_update(of=services)
            )
        ).one_or_none()
        if row is None:
            return None
        return Service(
            id=row.id,
            professional_id=row.professional_id,
            professional_user_id=row.professional_user_id,
            name=row.name,
            description=row.description,
            price=row.price,
            category=row.category,
            is_active=row.is_active,
        )

    async def save_service(self, service: Service) -> None:
        await self._session.execute(
            update(services)
            .where(services.c.id == service.id)
            .values(
                name=service.name,
                description=service.description,
                price=service.price,
                category=service.category,
                is_active=service.is_active,
                updated_at=func.now(),
            )
        )

    async def get_user_for_update(self, user_id: int) -> User | None:
        row = (
            await self._session.execute(
                select(users)
                .where(users.c.id == user_id, users.c.deleted_at.is_(None))
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            return None
        return User(
            id=row.id,
            name=row.name,
            email=row.email,
            phone=row.phone,
            role=Role(row.role),
            is_active=row.is_active,
        )

    async def save_user(self, user: User) -> None:
        try:
            await self._session.execute(
                update(users)
                .where(users.c.id == user.id)
                .values(
                    name=user.name,
                    email=user.email,
                    phone=user.phone,
                    role=user.role.value,
                    is_active=user.is_active,
                    updated_at=func.now(),
                )
            )
        except IntegrityError as exc:
            # The handler's email check cannot see a concurrent, uncommitted claim.
            if "uq_users_email" in str(exc.orig):
                raise Conflict("email: another user already has this address") from exc
            raise

    async def email_taken(self, email: str, *, by_other_than: int) -> bool:
        found = await self._session.scalar(
            select(users.c.id).where(
                func.lower(users.c.email) == email.lower(), users.c.id != by_other_than
            )
        )
        return found is not None

    async def soft_delete(self, kind: ResourceKind, resource_id: int) -> bool:
        table = _DELETABLE[kind]
        deleted = await self._session.scalar(
            update(table)
            .where(table.c.id == resource_id, table.c.deleted_at.is_(None))
            .values(deleted_at=func.now(), updated_at=func.now())
            .returning(table.c.id)
        )
        return deleted is not None


_DELETABLE = {
    ResourceKind.ORDER: orders,
    ResourceKind.SERVICE: services,
    ResourceKind.PROFESSIONAL: professionals,
    ResourceKind.USER: users,
}


class SqlOutboxRepository(OutboxRepository):
    def __init__(self, session: AsyncConnection) -> None:
        self._session = session

    async def add(self, message: OutboxMessage) -> None:
        await self._session.execute(outbox_insert(message))

    async def body_of(self, message_id: UUID) -> bytes | None:
        body: bytes | None = await self._session.scalar(
            select(outbox.c.body).where(outbox.c.message_id == message_id).limit(1)
        )
        return body


def outbox_insert(message: OutboxMessage) -> Insert:
    return insert(outbox).values(
        exchange=message.exchange,
        routing_key=message.routing_key,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        body=message.body,
        mandatory=message.mandatory,
        traceparent=message.traceparent,
    )
