"""Builders and database look-ups for the integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp.heartbeat import Heartbeat
from sqlalchemy import func, select, text

from consumer.adapters.db_faults import classify
from consumer.adapters.pg import ConnectionPool
from consumer.adapters.tables import batch_operations, operation_results, orders, outbox
from consumer.adapters.unit_of_work import SqlUnitOfWork
from consumer.adapters.waiting_room import SqlWaitingRoom
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.retry import RetryPolicy, Transactions
from tests.support import observer_engine


def batch(actor_id: int, *operations: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "operation_type": "order_update",
        "actor_id": actor_id,
        "operations": list(operations),
        **fields,
    }


def patch(resource_id: int, **data: Any) -> dict[str, Any]:
    return {"method": "PATCH", "resource_id": resource_id, "data": data}


async def fetch(database_url: str, query: Any) -> list[Any]:
    engine = observer_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(query))
    finally:
        await engine.dispose()


async def order(database_url: str, order_id: int) -> Any:
    rows = await fetch(database_url, select(orders).where(orders.c.id == order_id))
    return rows[0]


async def batch_row(database_url: str, batch_id: object) -> Any | None:
    rows = await fetch(
        database_url,
        select(batch_operations).where(batch_operations.c.batch_id == uuid.UUID(str(batch_id))),
    )
    return rows[0] if rows else None


async def result_rows(database_url: str, batch_id: object) -> list[Any]:
    return await fetch(
        database_url,
        select(operation_results)
        .where(operation_results.c.batch_id == uuid.UUID(str(batch_id)))
        .order_by(operation_results.c.index),
    )


async def count_batches(database_url: str) -> int:
    rows = await fetch(database_url, select(func.count()).select_from(batch_operations))
    return int(rows[0][0])


async def executed_batches(database_url: str) -> int:
    """Batches on record other than rejected ones (a rejection is recorded, never run)."""
    rows = await fetch(
        database_url,
        select(func.count())
        .select_from(batch_operations)
        .where(batch_operations.c.status != "rejected"),
    )
    return int(rows[0][0])


async def unsent_events(database_url: str) -> int:
    rows = await fetch(
        database_url, select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    )
    return int(rows[0][0])


async def waiting_on_a_lock(database_url: str) -> bool:
    """Whether a session of the database waits on a lock (a batch blocked by a row another
    transaction holds)."""
    waiting = await fetch(
        database_url,
        text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ),
    )
    return bool(waiting[0][0])


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `probe` until it holds; for state that has no event to wait on (rows, queues)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.05)


async def publish_raw(
    amqp_url: str,
    exchange: str,
    body: bytes,
    *,
    routing_key: str = "order_update",
    user_id: str | None = "guest",
    **properties: Any,
) -> None:
    """Publish bytes as any producer could, bypassing the publisher library's validation."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                user_id=user_id,
                **properties,
            ),
            routing_key=routing_key,
        )
    finally:
        await connection.close()


async def dead_letters(amqp_url: str, queue_name: str) -> list[bytes]:
    """Drain the dead-letter queue (the test owns its namespace)."""
    return [body for body, _ in await dead_letter_messages(amqp_url, queue_name)]


async def dead_letter_messages(
    amqp_url: str, queue_name: str
) -> list[tuple[bytes, dict[str, Any]]]:
    """Drain the dead-letter queue: each letter's body and headers."""
    connection = await aio_pika.connect_robust(amqp_url)
    found: list[tuple[bytes, dict[str, Any]]] = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append((message.body, dict(message.headers or {})))
    finally:
        await connection.close()
    return found


def sql_waiting_room(
    pool: ConnectionPool, namespace: str, *, lease_seconds: float = 10.0
) -> SqlWaitingRoom:
    """The service's waiting room on `pool`, retrying as the service does, quickly."""
    transactions = Transactions(
        lambda: SqlUnitOfWork(pool),
        classify,
        DatabaseAvailability(pool.probe),
        RetryPolicy(1.0, 0.01, 0.05),
    )
    return SqlWaitingRoom(pool, transactions, namespace, lease_seconds=lease_seconds)


async def set_user_active(database_url: str, user_id: int, *, active: bool) -> None:
    engine = observer_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE users SET is_active = :a WHERE id = :id"), {"a": active, "id": user_id}
            )
    finally:
        await engine.dispose()


def with_a_full_write_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill the connection's queue of frames to write (with heartbeats: the broker takes them
    at any time) just as a channel handles the broker's Channel.Close. A flood leaves that
    queue full at such a moment in some runs; this makes it every run. Call it after the
    connection is made (through `publisher`, which wraps that handler too: this goes first)."""
    handle = Channel._on_close_frame

    async def fill_then_handle(channel: Channel, frame: Any) -> None:
        while not channel.write_queue.full():
            channel.write_queue.put_nowait(
                ChannelFrame.marshall(channel_number=0, frames=[Heartbeat()])
            )
        await handle(channel, frame)

    monkeypatch.setattr(Channel, "_on_close_frame", fill_then_handle)
