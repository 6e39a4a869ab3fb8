"""`order_update` rules (docs/contract.md, Domain rules): the status machine and who may
change what."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from consumer.domain.access import require_active
from consumer.domain.errors import Conflict, PermissionDenied
from consumer.domain.fields import Changes, Money, Text
from consumer.domain.model import Actor, Order, OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.ACCEPTED, OrderStatus.CANCELLED}),
    OrderStatus.ACCEPTED: frozenset({OrderStatus.IN_PROGRESS, OrderStatus.CANCELLED}),
    OrderStatus.IN_PROGRESS: frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# What each party of an order may do; admin and staff may do everything.
PROFESSIONAL_TARGETS = frozenset(
    {OrderStatus.ACCEPTED, OrderStatus.IN_PROGRESS, OrderStatus.COMPLETED}
)
CLIENT_TARGETS = frozenset({OrderStatus.CANCELLED})
PRICE_EDITABLE = frozenset({OrderStatus.PENDING, OrderStatus.ACCEPTED})
CLIENT_CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.ACCEPTED})


class OrderChanges(Changes):
    """`data` of an order_update operation; at least one field."""

    status: OrderStatus | None = None
    notes: Annotated[Text, Field(max_length=2000)] | None = None
    price: Money | None = None


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise Conflict(f"order status cannot change from {current} to {target}")


def authorize(actor: Actor, order: Order, changes: OrderChanges) -> None:
    """Raise PermissionDenied unless `actor` may make `changes` to `order` as it is now."""
    require_active(actor)
    if actor.is_back_office:
        return
    if actor.id == order.professional_user_id:
        if changes.status is not None and changes.status not in PROFESSIONAL_TARGETS:
            raise PermissionDenied(f"the order's professional may not set status {changes.status}")
        if changes.price is not None and order.status not in PRICE_EDITABLE:
            raise PermissionDenied(f"the price cannot be changed while the order is {order.status}")
        return
    if actor.id == order.client_id:
        if changes.price is not None:
            raise PermissionDenied("the order's client may not change the price")
        if changes.status is not None:
            if changes.status not in CLIENT_TARGETS:
                raise PermissionDenied(f"the order's client may not set status {changes.status}")
            if order.status not in CLIENT_CANCELLABLE:
                raise PermissionDenied(f"the client cannot cancel an order that is {order.status}")
        return
    raise PermissionDenied("the actor is neither a party of this order nor back office")


def update_order(actor: Actor, order: Order, changes: OrderChanges) -> Order:
    """Apply `changes` to `order` in place after checking parties, then the status machine."""
    require_active(actor)
    is_party = actor.id in (order.client_id, order.professional_user_id)
    if not (actor.is_back_office or is_party):
        raise PermissionDenied("the actor is neither a party of this order nor back office")
    # A party learns about an impossible transition (409) before being told it is not theirs.
    if changes.status is not None:
        check_transition(order.status, changes.status)
    authorize(actor, order, changes)
    if changes.status is not None:
        order.status = changes.status
    if changes.notes is not None:
        order.notes = changes.notes
    if changes.price is not None:
        order.price = changes.price
    return order
