"""Marketplace entities as the rules see them: plain data, no persistence."""

from __future__ import annotations

from dataclasses import dataclass
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
