"""An example custom handler, registered as `append_order_note` by this plugin's pyproject.toml.

Copy its shape for your own: a plain async function taking the operation context and the
operation, raising `OperationFailed` subclasses for expected failures and returning the
resource as it is afterwards. Register it under the `batchops.handlers` entry-point group of
your package, then publish `{"operation_type": "custom", "handler": "<name>", ...}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from consumer.domain import orders
from consumer.domain.errors import ResourceNotFound
from consumer.domain.fields import Text
from consumer.service_layer.handlers import (
    OperationContext,
    parse_data,
    require_actor,
    require_method,
)
from contracts import Method, Operation

__all__ = ["append_order_note"]


class NoteLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Annotated[Text, Field(min_length=1, max_length=500)]


async def append_order_note(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    """Append a line to an order's notes; whoever may set the notes may append."""
    actor = require_actor(ctx)
    require_method(operation, Method.POST)
    line = parse_data(NoteLine, operation.data)
    order = await ctx.uow.marketplace.get_order_for_update(operation.resource_id)
    if order is None:
        raise ResourceNotFound(f"order {operation.resource_id} does not exist")
    notes = f"{order.notes}\n{line.text}" if order.notes else line.text
    orders.update_order(actor, order, orders.OrderChanges(notes=notes[-2000:]))
    await ctx.uow.marketplace.save_order(order)
    return order.as_data()
