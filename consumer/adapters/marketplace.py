"""The marketplace's rows (users, orders, professionals, services) for the handlers: locked
reads, and saves that ride along in the statement recording the operation's result."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import Table, bindparam, func, select, update

from consumer.adapters.pg import Deferrable, Session, Statement
from consumer.adapters.tables import orders, professionals, services, users
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
from consumer.service_layer.unit_of_work import MarketplaceRepository

# The time of the write itself: `now()` is the transaction's start, which a chained commit
# (see pg.Session.commit) moves back to the previous operation's commit.
_NOW = func.statement_timestamp()
_USERS_EMAIL = "uq_users_email"


def _where_id(table: Table, *, live: bool = True) -> Any:
    condition = table.c.id == bindparam("id")
    return condition & table.c.deleted_at.is_(None) if live else condition


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
SAVES = {
    "order": _ORDER_SAVE.where(orders.c.id == bindparam("e_id")),
    "professional": _PROFESSIONAL_SAVE.where(professionals.c.id == bindparam("e_id")),
    "service": _SERVICE_SAVE.where(services.c.id == bindparam("e_id")),
}
DEFERRED_SAVE = {key: Deferrable(key, Statement(save)) for key, save in SAVES.items()}

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
            DEFERRED_SAVE["order"],
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
            DEFERRED_SAVE["professional"],
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
            DEFERRED_SAVE["service"],
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
