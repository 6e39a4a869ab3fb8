"""A naive peer of batchops, for the benchmark: FastStream consumes the same batch requests and
SQLAlchemy's ORM runs each operation in a session and transaction of its own; every event goes
straight to the broker (no outbox). It is what a plain implementation of the same job costs.

    python -m bench.peers.naive

Configured like `batchops consume`, by BATCHOPS_DATABASE_URL, BATCHOPS_AMQP_URL,
BATCHOPS_NAMESPACE, BATCHOPS_PREFETCH and BATCHOPS_DB_POOL_SIZE; it declares and consumes the
namespace's work queue as batchops does. It does the bench's job and no more: order_update
operations one after another, each committed on its own (mode `continue`); no redelivery
handling, no atomic mode, no other operation type. Prints `{"event": "consuming"}` once it
consumes; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast
from uuid import UUID

from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
)
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.peers.orm import Batch, Order, Professional, Result, User
from consumer.config import Settings
from contracts import (
    BatchCompleted,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Operation,
    OperationError,
    OperationResult,
    Outcome,
    batch_routing_key,
    completion_event_id,
    operation_event_id,
    operation_routing_key,
)

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import QuorumQueueArgs

BACK_OFFICE = frozenset({"admin", "staff"})
TRANSITIONS = {
    "pending": {"accepted", "cancelled"},
    "accepted": {"in_progress", "cancelled"},
    "in_progress": {"completed", "cancelled"},
}


class Refused(Exception):
    """An operation that fails: its error code and message go into its event."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def order_for_update(order_id: int) -> Select[Order, int]:
    """The order and its professional's user, the order row locked (as batchops reads it)."""
    return (
        select(Order, Professional.user_id)
        .join(Professional, Professional.id == Order.professional_id)
        .where(Order.id == order_id, Order.deleted_at.is_(None))
        .with_for_update(of=Order)
    )


def apply(
    actor: User | None, order: Order, professional_user_id: int, data: dict[str, Any]
) -> None:
    """Check who may change what and the status machine, then change `order` in place."""
    if actor is None or not actor.is_active:
        raise Refused(ErrorCode.PERMISSION_DENIED, "the actor is missing or inactive")
    if actor.role not in BACK_OFFICE and actor.id not in (order.client_id, professional_user_id):
        raise Refused(ErrorCode.PERMISSION_DENIED, "the actor is not a party of this order")
    status = data.get("status")
    if status is not None and status not in TRANSITIONS.get(order.status, ()):
        raise Refused(ErrorCode.CONFLICT, f"status cannot change from {order.status} to {status}")
    if status is not None:
        order.status = status
    if "notes" in data:
        order.notes = str(data["notes"])
    if "price" in data:
        order.price = Decimal(str(data["price"]))
    order.updated_at = datetime.now(UTC)


def order_data(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "client_id": order.client_id,
        "professional_id": order.professional_id,
        "service_id": order.service_id,
        "status": order.status,
        "notes": order.notes,
        "price": f"{order.price:.2f}",
    }


def succeeded(common: dict[str, Any], data: dict[str, Any]) -> OperationResult:
    return OperationResult(
        **common,
        status=200,
        success=True,
        outcome=Outcome.SUCCEEDED,
        data=data,
        occurred_at=datetime.now(UTC),
    )


def failed(common: dict[str, Any], refused: Refused) -> OperationResult:
    error = OperationError(code=refused.code, message=str(refused), type=refused.code.error_type)
    return OperationResult(
        **common,
        status=refused.code.status,
        success=False,
        outcome=Outcome.FAILED,
        error=error,
        occurred_at=datetime.now(UTC),
    )


def result_row(event: OperationResult, body: bytes) -> Result:
    return Result(
        batch_id=event.batch_id,
        index=event.index,
        resource_id=event.resource_id,
        outcome=event.outcome.value,
        status_code=event.status,
        error_code=event.error.code.value if event.error else None,
        event=body,
    )


@dataclass(frozen=True, slots=True)
class NaivePeer:
    sessions: async_sessionmaker[AsyncSession]
    broker: RabbitBroker
    results: RabbitExchange

    async def run(self, request: BatchRequest, correlation_id: str | None) -> None:
        started = datetime.now(UTC)
        actor = await self._open(request, correlation_id, started)
        events = [
            await self._operation(request, correlation_id, actor, index, operation)
            for index, operation in enumerate(request.operations)
        ]
        await self._finish(request, correlation_id, started, events)

    async def _open(
        self, request: BatchRequest, correlation_id: str | None, started: datetime
    ) -> User | None:
        """Record the batch (result rows need it) and load the actor."""
        async with self.sessions() as session, session.begin():
            session.add(
                Batch(
                    batch_id=request.batch_id,
                    operation_type=request.operation_type.value,
                    actor_id=request.actor_id,
                    mode=request.mode.value,
                    status=BatchStatus.PROCESSING.value,
                    total_operations=len(request.operations),
                    fingerprint=hashlib.sha256(request.model_dump_json().encode()).digest(),
                    correlation_id=correlation_id,
                    created_at=started,
                    started_at=started,
                )
            )
            return await session.get(User, request.actor_id)

    async def _operation(
        self,
        request: BatchRequest,
        correlation_id: str | None,
        actor: User | None,
        index: int,
        operation: Operation,
    ) -> OperationResult:
        """One operation in a session and transaction of its own, then its event."""
        common: dict[str, Any] = {
            "event_id": operation_event_id(request.batch_id, index),
            "batch_id": request.batch_id,
            "correlation_id": correlation_id,
            "operation_type": request.operation_type.value,
            "index": index,
            "resource_id": operation.resource_id,
        }
        async with self.sessions() as session, session.begin():
            found = (await session.execute(order_for_update(operation.resource_id))).one_or_none()
            try:
                if found is None:
                    raise Refused(ErrorCode.NOT_FOUND, "no such order")
                order, professional_user_id = found.tuple()
                apply(actor, order, professional_user_id, operation.data)
                event = succeeded(common, order_data(order))
            except Refused as refused:
                event = failed(common, refused)
            body = event.model_dump_json().encode()
            session.add(result_row(event, body))
        routing_key = operation_routing_key(request.operation_type.value, event.outcome.value)
        await self._publish(body, routing_key, event.event_id)
        return event

    async def _finish(
        self,
        request: BatchRequest,
        correlation_id: str | None,
        started: datetime,
        events: list[OperationResult],
    ) -> None:
        """Close the batch row with its counters, then publish the completion."""
        total, succeeded = len(events), sum(event.success for event in events)
        status: Literal[BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED] = (
            BatchStatus.COMPLETED
            if succeeded == total
            else BatchStatus.FAILED
            if succeeded == 0
            else BatchStatus.PARTIAL
        )
        finished = datetime.now(UTC)
        completion = BatchCompleted(
            event_id=completion_event_id(request.batch_id),
            batch_id=request.batch_id,
            correlation_id=correlation_id,
            operation_type=request.operation_type.value,
            status=status,
            total_operations=total,
            completed_operations=succeeded,
            failed_operations=total - succeeded,
            skipped_operations=0,
            success_rate=round(100 * succeeded / total, 2),
            progress=100.0,
            created_at=started,
            started_at=started,
            completed_at=finished,
            duration_seconds=(finished - started).total_seconds(),
            results=events,
        )
        body = completion.model_dump_json().encode()
        async with self.sessions() as session, session.begin():
            batch = await session.get_one(Batch, request.batch_id)
            batch.status = status.value
            batch.completed_operations = succeeded
            batch.failed_operations = total - succeeded
            batch.completed_at = finished
            batch.completion_event = body
        routing_key = batch_routing_key(request.operation_type.value, status.value)
        await self._publish(body, routing_key, completion.event_id)

    async def _publish(self, body: bytes, routing_key: str, event_id: UUID) -> None:
        # Persistent and confirmed (FastStream's channels wait for publisher confirms).
        await self.broker.publish(
            body,
            exchange=self.results,
            routing_key=routing_key,
            message_id=str(event_id),
            content_type="application/json",
            persist=True,
        )


def build_broker(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> RabbitBroker:
    """The broker with the peer subscribed to the namespace's work queue, which it declares
    with batchops' arguments (docs/contract.md) so either may declare it first."""
    topology = settings.topology
    broker = RabbitBroker(settings.amqp_url)
    results = RabbitExchange(topology.results_exchange, type=ExchangeType.TOPIC, durable=True)
    requests = RabbitExchange(topology.requests_exchange, type=ExchangeType.TOPIC, durable=True)
    # Exactly batchops' arguments (RabbitQueue adds x-queue-type itself).
    arguments = {
        k: v for k, v in topology.requests_queue_arguments().items() if k != "x-queue-type"
    }
    queue = RabbitQueue(
        topology.requests_queue,
        queue_type=QueueType.QUORUM,
        arguments=cast("QuorumQueueArgs", arguments),
        routing_key="#",
    )
    peer = NaivePeer(sessions, broker, results)

    @broker.subscriber(queue, requests, channel=Channel(prefetch_count=settings.prefetch))
    async def on_request(request: BatchRequest, message: RabbitMessage) -> None:
        await peer.run(request, message.raw_message.correlation_id)

    return broker


async def serve(settings: Settings) -> None:
    engine = create_async_engine(settings.database_url, pool_size=settings.db_pool_size)
    broker = build_broker(settings, async_sessionmaker(engine, expire_on_commit=False))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await broker.start()
        # What the bench waits for before it publishes (as `batchops consume` logs it).
        print(json.dumps({"event": "consuming"}), flush=True)
        await stopping.wait()
    finally:
        await broker.stop()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve(Settings()))
