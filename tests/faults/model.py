"""A model of the orders the fault scenarios change, and the batches that change them.

The scenarios use two operations whose double application shows: appending a line to an
order's notes (a second append repeats the line) and walking an order through its status
machine (a second `accepted` is a CONFLICT). Every batch runs as the admin (user 1), so the
status machine is the only rule in play.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from contracts import BatchRequest, ErrorCode, Mode, Outcome

ADMIN = 1
# The orders of the shared server's test database (tests/conftest.py); a scenario on a server
# of its own seeds more (tests/faults/load.py) and tells the oracle.
SEEDED_ORDERS = range(1, 31)
NOTES_LIMIT = 2000

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"accepted", "cancelled"}),
    "accepted": frozenset({"in_progress", "cancelled"}),
    "in_progress": frozenset({"completed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}
NOTE_HANDLERS = frozenset({"append_order_note", "crash_on_marker"})


@dataclass(frozen=True, slots=True)
class OrderState:
    status: str = "pending"
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Expected:
    """What one operation's result must say, and the order as its event must show it."""

    outcome: Outcome
    code: ErrorCode | None = None
    after: OrderState | None = None

    @property
    def result(self) -> tuple[Outcome, str | None]:
        """As a result row says it: (outcome, error code)."""
        return self.outcome, self.code.value if self.code else None

    @property
    def shown(self) -> str:
        return self.code.value if self.code else self.outcome.value


def predict(state: OrderState, request: BatchRequest, index: int) -> tuple[Expected, OrderState]:
    """The result of operation `index` run once on an order in `state`, and the state after."""
    operation = request.operations[index]
    data: dict[str, Any] = operation.data
    if request.operation_type.value == "custom" and request.handler in NOTE_HANDLERS:
        text = str(data["text"])
        notes = f"{state.notes}\n{text}" if state.notes else text
        after = replace(state, notes=notes[-NOTES_LIMIT:])
        return Expected(Outcome.SUCCEEDED, after=after), after
    if request.operation_type.value == "order_update":
        target = data.get("status")
        if target is not None and target not in TRANSITIONS[state.status]:
            return Expected(Outcome.FAILED, ErrorCode.CONFLICT), state
        after = OrderState(status=target or state.status, notes=data.get("notes", state.notes))
        return Expected(Outcome.SUCCEEDED, after=after), after
    raise ValueError(f"the fault model does not know {request.operation_type}/{request.handler}")


SKIPPED = Expected(Outcome.SKIPPED, ErrorCode.SKIPPED)


def run_batch(
    request: BatchRequest,
    orders: dict[int, OrderState],
    *,
    unavailable: set[int],
    poisoned: int | None,
) -> list[Expected | None]:
    """Run `request` once on the model (`orders` changes in place) and return what each result
    must say. `unavailable` operations hit a transient fault (no effect; `None`: UNAVAILABLE is
    expected in their place); the `poisoned` one crashed the consumer on every delivery."""
    scratch = dict(orders)
    expected: list[Expected | None] = []
    stop_at: int | None = None
    for index, operation in enumerate(request.operations):
        if stop_at is not None:
            expected.append(SKIPPED)
        elif index == poisoned:
            expected.append(Expected(Outcome.FAILED, ErrorCode.INTERNAL_ERROR))
            stop_at = index
        elif index in unavailable:
            expected.append(None)
            stop_at = None if request.mode is Mode.CONTINUE else index
        else:
            state = scratch.get(operation.resource_id, OrderState())
            result, scratch[operation.resource_id] = predict(state, request, index)
            expected.append(result)
            if result.outcome is not Outcome.SUCCEEDED and request.mode is not Mode.CONTINUE:
                stop_at = index
    if request.mode is Mode.ATOMIC and stop_at is not None:
        # Everything before the failure was rolled back with it.
        return [e if i == stop_at else SKIPPED for i, e in enumerate(expected)]
    orders.update(scratch)
    return expected


def notes_batch(
    *lines: tuple[int, str], handler: str = "append_order_note", mode: Mode = Mode.CONTINUE
) -> BatchRequest:
    """A custom batch appending each (order id, text) line to that order's notes, in order."""
    return BatchRequest.model_validate(
        {
            "batch_id": uuid.uuid4(),
            "operation_type": "custom",
            "handler": handler,
            "actor_id": ADMIN,
            "mode": mode,
            "operations": [
                {"method": "POST", "resource_id": order_id, "data": {"text": text}}
                for order_id, text in lines
            ],
        }
    )


def status_batch(*changes: tuple[int, str], mode: Mode = Mode.CONTINUE) -> BatchRequest:
    """An order_update batch setting each (order id, status) in order."""
    return BatchRequest.model_validate(
        {
            "batch_id": uuid.uuid4(),
            "operation_type": "order_update",
            "actor_id": ADMIN,
            "mode": mode,
            "operations": [
                {"method": "PATCH", "resource_id": order_id, "data": {"status": status}}
                for order_id, status in changes
            ],
        }
    )


def companions() -> list[BatchRequest]:
    """Batches that run alongside the one under fault, on orders 9-18: a status walk that ends
    in a CONFLICT, and an atomic batch that its CONFLICT rolls back entirely."""
    return [
        status_batch((9, "accepted"), (9, "in_progress"), (12, "accepted"), (12, "accepted")),
        status_batch((15, "accepted"), (18, "completed"), mode=Mode.ATOMIC),
    ]


def orders_of(request: BatchRequest) -> set[int]:
    return {operation.resource_id for operation in request.operations}
