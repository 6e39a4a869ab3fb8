"""Operation handlers: one plain async function per operation type, registered in HANDLERS.

A handler loads what it needs through the unit of work, applies the domain rules, writes the
change and returns the resource as it is afterwards. It raises `OperationFailed` subclasses
for expected failures; it never commits (the executor owns the transaction).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from consumer.domain import catalog, orders
from consumer.domain.errors import (
    Conflict,
    InvalidData,
    MethodNotAllowed,
    PermissionDenied,
    ResourceNotFound,
)
from consumer.domain.model import Actor
from consumer.service_layer.unit_of_work import AbstractUnitOfWork
from contracts import Method, Operation, RejectionReason

Payload = TypeVar("Payload", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class OperationContext:
    uow: AbstractUnitOfWork
    actor_id: int
    actor: Actor | None
    now: datetime


OperationHandler = Callable[[OperationContext, Operation], Awaitable[dict[str, Any]]]


def require_actor(ctx: OperationContext) -> Actor:
    """docs/contract.md (Domain rules): an inactive or unknown actor gets 403 on every operation."""
    if ctx.actor is None or not ctx.actor.is_active:
        raise PermissionDenied(f"actor {ctx.actor_id} is unknown or inactive")
    return ctx.actor


def require_method(operation: Operation, *allowed: Method) -> None:
    if operation.method not in allowed:
        names = ", ".join(m.value for m in allowed)
        raise MethodNotAllowed(f"method {operation.method} is not allowed here (use {names})")


def parse_data(model: type[Payload], data: dict[str, Any]) -> Payload:
    """Validate `data`; the error names every offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        reasons = RejectionReason.from_errors(exc.errors(include_url=False))
        raise InvalidData("; ".join(reason.describe("data") for reason in reasons)) from None


async def update_order(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    actor = require_actor(ctx)
    require_method(operation, Method.PATCH)
    changes = parse_data(orders.OrderChanges, operation.data)
    order = await ctx.uow.marketplace.get_order_for_update(operation.resource_id)
    if order is None:
        raise ResourceNotFound(f"order {operation.resource_id} does not exist")
    orders.update_order(actor, order, changes)
    await ctx.uow.marketplace.save_order(order)
    return order.as_data()


async def approve_professional(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    actor = require_actor(ctx)
    require_method(operation, Method.PATCH)
    catalog.require_back_office(actor, "approve professionals")
    decision = parse_data(catalog.ApprovalDecision, operation.data)
    professional = await ctx.uow.marketplace.get_professional_for_update(operation.resource_id)
    if professional is None:
        raise ResourceNotFound(f"professional {operation.resource_id} does not exist")
    catalog.decide_approval(actor, professional, decision, ctx.now)
    await ctx.uow.marketplace.save_professional(professional)
    return professional.as_data()


async def update_service(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    actor = require_actor(ctx)
    require_method(operation, Method.PATCH)
    changes = parse_data(catalog.ServiceChanges, operation.data)
    service = await ctx.uow.marketplace.get_service_for_update(operation.resource_id)
    if service is None:
        raise ResourceNotFound(f"service {operation.resource_id} does not exist")
    catalog.update_service(actor, service, changes)
    await ctx.uow.marketplace.save_service(service)
    return service.as_data()


async def update_user(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    actor = require_actor(ctx)
    require_method(operation, Method.PATCH)
    changes = parse_data(catalog.UserChanges, operation.data)
    user = await ctx.uow.marketplace.get_user_for_update(operation.resource_id)
    if user is None:
        raise ResourceNotFound(f"user {operation.resource_id} does not exist")
    catalog.update_user(actor, user, changes)
    if changes.email is not None and await ctx.uow.marketplace.email_taken(
        changes.email, by_other_than=user.id
    ):
        raise Conflict("email: another user already has this address")
    await ctx.uow.marketplace.save_user(user)
    return user.as_data()


async def delete_resource(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    actor = require_actor(ctx)
    require_method(operation, Method.DELETE)
    catalog.require_admin(actor, "delete resources")
    target = parse_data(catalog.DeleteTarget, operation.data)
    if not await ctx.uow.marketplace.soft_delete(target.resource, operation.resource_id):
        raise ResourceNotFound(f"{target.resource} {operation.resource_id} does not exist")
    return {"id": operation.resource_id, "resource": target.resource.value, "deleted": True}


HANDLERS: dict[str, OperationHandler] = {
    "order_update": update_order,
    "professional_approval": approve_professional,
    "service_update": update_service,
    "user_update": update_user,
    "bulk_delete": delete_resource,
}
