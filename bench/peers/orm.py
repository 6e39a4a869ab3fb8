"""The peer's ORM classes: batchops' own tables (consumer/adapters/tables.py) mapped
declaratively, so the peer reads and writes exactly the rows batchops does."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy.orm import DeclarativeBase, Mapped

from consumer.adapters import tables


class Base(DeclarativeBase):
    pass


# `__table__` brings the columns; the annotations only type the attributes the peer uses.
class User(Base):
    __table__ = tables.users

    id: Mapped[int]
    role: Mapped[str]
    is_active: Mapped[bool]


class Professional(Base):
    __table__ = tables.professionals

    id: Mapped[int]
    user_id: Mapped[int]


class Order(Base):
    __table__ = tables.orders

    id: Mapped[int]
    client_id: Mapped[int]
    professional_id: Mapped[int]
    service_id: Mapped[int]
    status: Mapped[str]
    notes: Mapped[str]
    price: Mapped[Decimal]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class Batch(Base):
    __table__ = tables.batch_operations

    batch_id: Mapped[UUID]
    operation_type: Mapped[str]
    actor_id: Mapped[int]
    mode: Mapped[str]
    status: Mapped[str]
    total_operations: Mapped[int]
    completed_operations: Mapped[int]
    failed_operations: Mapped[int]
    fingerprint: Mapped[bytes]
    correlation_id: Mapped[str | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    completion_event: Mapped[bytes | None]


class Result(Base):
    __table__ = tables.operation_results

    batch_id: Mapped[UUID]
    index: Mapped[int]
    resource_id: Mapped[int]
    outcome: Mapped[str]
    status_code: Mapped[int]
    error_code: Mapped[str | None]
    event: Mapped[bytes]
