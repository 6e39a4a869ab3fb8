"""Marketplace entities as the rules see them: plain data, no persistence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    CLIENT = "client"
    PROFESSIONAL = "professional"


@dataclass(frozen=True, slots=True)
class Actor:
    """The marketplace user a batch runs for."""

    id: int
    role: Role
    is_active: bool

    @property
    def is_back_office(self) -> bool:
        return self.is_active and self.role in (Role.ADMIN, Role.STAFF)


class OrderStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Order:
    id: int
    client_id: int
    professional_id: int
    professional_user_id: int
    service_id: int
    status: OrderStatus
    notes: str
    price: Decimal

    def as_data(self) -> dict[str, object]:
        """The order as an operation result shows it."""
        return {
            "id": self.id,
            "client_id": self.client_id,
            "professional_id": self.professional_id,
            "service_id": self.service_id,
            "status": self.status.value,
            "notes": self.notes,
            "price": f"{self.price:.2f}",
        }


@dataclass(slots=True)
class Professional:
    id: int
    user_id: int
    approved: bool
    verified: bool
    approved_by: int | None
    approved_at: datetime | None
    approval_reason: str | None

    def as_data(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "approved": self.approved,
            "verified": self.verified,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "reason": self.approval_reason,
        }


@dataclass(slots=True)
class Service:
    id: int
    professional_id: int
    professional_user_id: int
    name: str
    description: str
    price: Decimal
    category: str
    is_active: bool

    def as_data(self) -> dict[str, object]:
        return {
            "id": self.id,
            "professional_id": self.professional_id,
            "name": self.name,
            "description": self.description,
            "price": f"{self.price:.2f}",
            "category": self.category,
            "is_active": self.is_active,
        }


@dataclass(slots=True)
class User:
    id: int
    name: str
    email: str
    phone: str | None
    role: Role
    is_active: bool

    def as_data(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "role": self.role.value,
            "is_active": self.is_active,
        }


class ResourceKind(StrEnum):
    """What `bulk_delete` can delete."""

    ORDER = "order"
    SERVICE = "service"
    PROFESSIONAL = "professional"
    USER = "user"
