"""What the executor tests share: a batch and its delivery, an executor on the in-memory unit
of work, scripted handler faults, and readers of what ended up in the fake database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from consumer.domain.batch import BatchState
from consumer.domain.grants import Grant
from consumer.domain.model import OrderStatus
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS, OperationContext, OperationHandler
from consumer.service_layer.intake import Delivery, IntakePolicy
from consumer.service_layer.retry import RetryPolicy
from consumer.service_layer.unit_of_work import OutboxMessage
from contracts import (
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    BatchCompleted,
    Mode,
    Operation,
    OperationResult,
    Outcome,
    Topology,
    operation_event_id,
)
from tests.unit.fakes import FakeDatabase, demo_marketplace, transactions_for

BATCH_ID = UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10")
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
RETRY = RetryPolicy(attempts=3, base_seconds=0.0001, max_seconds=0.0005)
DELIVERY_LIMIT = 5
ADMIN = 1
RESULTS_EXCHANGE = "batchops.results"

# order i of the demo marketplace: client 3 + i % 3, professional user 6 + i % 3, pending.
ACCEPT_1 = {"method": "PATCH", "resource_id": 1, "data": {"status": "accepted"}}
COMPLETE_2 = {"method": "PATCH", "resource_id": 2, "data": {"status": "completed"}}  # 409
NOTES_3 = {"method": "PATCH", "resource_id": 3, "data": {"notes": "call before arriving"}}
PARTIAL_BATCH = [ACCEPT_1, COMPLETE_2, NOTES_3]


class ConsumerCrash(BaseException):
    """The process dying mid-operation: not an Exception, so nothing in the executor catches it
    and the message is left to redelivery, exactly like a kill -9."""


class Clock:
    """Each reading is one millisecond after the previous one."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@dataclass
class ScriptedHandler:
    """The real order_update handler, with scripted exceptions for chosen orders.

    `faults[resource_id]` are raised one per call, in turn, before the real handler runs (or
    after it has staged its change, with `after=True`); once they run out it behaves normally.
    """

    faults: dict[int, list[BaseException]] = field(default_factory=dict)
    after: bool = False
    calls: Counter[int] = field(default_factory=Counter)
    on_call: Callable[[Operation], None] | None = None

    async def __call__(self, ctx: OperationContext, operation: Operation) -> dict[str, Any]:
        self.calls[operation.resource_id] += 1
        if self.on_call is not None:
            self.on_call(operation)
        pending = self.faults.get(operation.resource_id)
        if pending and not self.after:
            raise pending.pop(0)
        data = await HANDLERS["order_update"](ctx, operation)
        if pending and self.after:
            raise pending.pop(0)
        return data


def executor_for(
    db: FakeDatabase,
    handler: OperationHandler | None = None,
    *,
    custom_handlers: dict[str, OperationHandler] | None = None,
    delivery_limit: int = DELIVERY_LIMIT,
    retry: RetryPolicy = RETRY,
    max_operations: int = MAX_OPERATIONS,
    grants: Mapping[str, Grant] | None = None,
) -> BatchExecutor:
    handlers = dict(HANDLERS) if handler is None else {"order_update": handler}
    custom = custom_handlers or {}
    return BatchExecutor(
        transactions_for(db, retry),
        handlers,
        custom,
        IntakePolicy(
            max_body_bytes=MAX_BODY_BYTES,
            max_operations=max_operations,
            allowed_publishers=frozenset(),
            operation_types=frozenset(handlers) | {"custom"},
            custom_handlers=frozenset(custom),
            grants=grants,
        ),
        EventFactory(Topology()),
        delivery_limit=delivery_limit,
        clock=Clock(),
    )


def batch_body(
    operations: list[dict[str, Any]], *, mode: Mode = Mode.CONTINUE, actor_id: int = ADMIN
) -> bytes:
    return json.dumps(
        {
            "batch_id": str(BATCH_ID),
            "operation_type": "order_update",
            "actor_id": actor_id,
            "mode": mode.value,
            "operations": operations,
        }
    ).encode()


def delivery(
    body: bytes,
    *,
    delivery_count: int = 0,
    correlation_id: str | None = "corr-1",
    reply_to: str | None = None,
    dead_lettered: bool = False,
    give_up: bool = False,
) -> Delivery:
    return Delivery(
        body=body,
        user_id="producer",
        correlation_id=correlation_id,
        reply_to=reply_to,
        content_type="application/json",
        delivery_count=delivery_count,
        dead_lettered=dead_lettered,
        give_up=give_up,
    )


def announcement(body: bytes) -> OutboxMessage:
    """An event's outbox row, as the executor would queue it with a result."""
    return OutboxMessage("results", "operation.order_update.succeeded", uuid4(), None, body)


# -- reading the outcome back -------------------------------------------------------------------


def routing_keys(db: FakeDatabase) -> list[str]:
    return [message.routing_key for message in db.outbox]


def operation_messages(db: FakeDatabase) -> list[OutboxMessage]:
    return [m for m in db.outbox if m.routing_key.startswith("operation.")]


def batch_messages(db: FakeDatabase) -> list[OutboxMessage]:
    return [m for m in db.outbox if m.routing_key.startswith("batch.")]


def operation_events(db: FakeDatabase) -> list[OperationResult]:
    return [OperationResult.model_validate_json(m.body) for m in operation_messages(db)]


def the_completion(db: FakeDatabase) -> BatchCompleted:
    messages = batch_messages(db)
    assert len(messages) == 1, f"expected one completion, the outbox has {routing_keys(db)}"
    return BatchCompleted.model_validate_json(messages[0].body)


def stored_state(db: FakeDatabase) -> BatchState:
    assert BATCH_ID in db.batches, "the batch was never recorded"
    return db.batches[BATCH_ID].state


def outcomes(db: FakeDatabase) -> list[tuple[int, Outcome, int, str | None]]:
    return [(r.index, r.outcome, r.status, r.error_code) for r in db.results_of(BATCH_ID)]


def an_event(index: int, *, resource_id: int, correlation_id: str = "corr-1") -> bytes:
    """The body of a success event as a consumer would have committed it."""
    return (
        OperationResult(
            event_id=operation_event_id(BATCH_ID, index),
            batch_id=BATCH_ID,
            correlation_id=correlation_id,
            operation_type="order_update",
            index=index,
            resource_id=resource_id,
            status=200,
            success=True,
            outcome=Outcome.SUCCEEDED,
            data={"id": resource_id, "status": "accepted"},
            occurred_at=T0,
        )
        .model_dump_json()
        .encode()
    )


def result_of(completion: BatchCompleted, index: int) -> OperationResult:
    return next(result for result in completion.results if result.index == index)


def order_status(db: FakeDatabase, order_id: int) -> OrderStatus:
    return db.orders[order_id].status


def untouched(db: FakeDatabase, *order_ids: int) -> bool:
    fresh = demo_marketplace()
    return all(db.orders[i] == fresh.orders[i] for i in order_ids)
