"""Move the work queue of an earlier version to the current arguments, keeping its messages.

Queue arguments cannot change in place, so `batchops queues migrate` moves the messages
through a holding queue: new requests are routed to the holding queue first (so none is
unroutable meanwhile), the old queue is drained into it and deleted, the queue is declared
again with the current arguments, and the holding queue is drained into it. Every step can be
repeated: a run that stopped half-way is finished by the next one. Each message is re-published
with its body, properties and headers and confirmed before the original is acknowledged, so
nothing is lost; a crash between the two may leave a copy in both queues, which the service's
idempotent batch_id absorbs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from contracts import Topology
from publisher import declare_topology, publish_confirmed

log = structlog.get_logger(__name__)


class MigrationRefused(Exception):
    """The queue cannot be migrated now (consumers are attached to it)."""


class WorkQueue(enum.Enum):
    CURRENT = "current"
    OUTDATED = "outdated"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    was: WorkQueue
    moved_out: int  # old queue -> holding queue
    moved_in: int  # holding queue -> new queue


def holding_queue(topology: Topology) -> str:
    return f"{topology.requests_queue}.migrating"


async def inspect(connection: AbstractRobustConnection, topology: Topology) -> WorkQueue:
    """Whether the work queue exists, and with the current arguments."""
    if not await _exists(connection, topology.requests_queue):
        return WorkQueue.ABSENT
    channel = await connection.channel()
    try:
        # Re-declaring with other arguments than the queue has is refused: that is the test.
        await channel.declare_queue(
            topology.requests_queue, durable=True, arguments=topology.requests_queue_arguments()
        )
    except ChannelPreconditionFailed:
        return WorkQueue.OUTDATED
    finally:
        await _close(channel)
    return WorkQueue.CURRENT


async def migrate(connection: AbstractRobustConnection, topology: Topology) -> MigrationReport:
    """Bring the work queue to the current arguments with every message it holds.

    Raises MigrationRefused while consumers are attached to the old queue (stop them first),
    and the broker's error when it refuses to re-publish a message (e.g. a `user_id` of
    another broker user: run as that user or as one with the `impersonator` tag).
    """
    was = await inspect(connection, topology)
    moved_out = 0
    if was is WorkQueue.OUTDATED:
        moved_out = await _drain_old_queue(connection, topology)
    holding = await _exists(connection, holding_queue(topology))
    channel = await connection.channel(publisher_confirms=True)
    try:
        await declare_topology(channel, topology)
        moved_in = await _drain_holding_queue(channel, topology) if holding else 0
    finally:
        await _close(channel)
    log.info("work_queue_migrated", was=was.value, moved_out=moved_out, moved_in=moved_in)
    return MigrationReport(was, moved_out, moved_in)


async def _drain_old_queue(connection: AbstractRobustConnection, topology: Topology) -> int:
    channel = await connection.channel(publisher_confirms=True)
    try:
        old = await channel.declare_queue(topology.requests_queue, passive=True)
        consumers = old.declaration_result.consumer_count or 0
        if consumers:
            raise MigrationRefused(
                f"{consumers} consumers are attached to {topology.requests_queue}: stop every "
                "batchops consume/serve of the previous version first"
            )
        holding = await _declare_holding(channel, topology)
        requests = await channel.get_exchange(topology.requests_exchange)
        await holding.bind(requests, routing_key="#")
        # From here new requests reach only the holding queue.
        await old.unbind(requests, routing_key="#")
        moved = await _move(channel, topology.requests_queue, holding.name)
        await _delete_emptied(channel, topology.requests_queue)
        log.info("old_work_queue_deleted", queue=topology.requests_queue, moved=moved)
        return moved
    finally:
        await _close(channel)


async def _exists(connection: AbstractRobustConnection, queue: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return False
    finally:
        await _close(channel)
    return True


async def _drain_holding_queue(channel: AbstractChannel, topology: Topology) -> int:
    holding = await channel.declare_queue(holding_queue(topology), passive=True)
    requests = await channel.get_exchange(topology.requests_exchange)
    # The work queue is bound again (declare_topology): stop routing to the holding queue.
    await holding.unbind(requests, routing_key="#")
    moved = await _move(channel, holding.name, topology.requests_queue)
    await _delete_emptied(channel, holding.name)
    return moved


async def _declare_holding(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    # A quorum queue like the work queue, without dead-lettering: it only holds.
    return await channel.declare_queue(
        holding_queue(topology), durable=True, arguments={"x-queue-type": "quorum"}
    )


async def _move(channel: AbstractChannel, source: str, target: str) -> int:
    """Re-publish every message of `source` to `target`, in order, each confirmed before its
    original is acknowledged."""
    queue = await channel.get_queue(source, ensure=False)
    moved = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await publish_confirmed(channel.default_exchange, copy_of(message), target)
        await message.ack()
        moved += 1
    return moved


def copy_of(
    message: AbstractIncomingMessage, headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    """`message` to publish again, every property kept (persistent), with `headers` instead of
    its own when given."""
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers or {}) if headers is None else headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=message.delivery_mode or aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=message.user_id,
        app_id=message.app_id,
    )


async def _delete_emptied(channel: AbstractChannel, name: str) -> None:
    # `_move` found the queue empty and nothing is routed to it any more; quorum queues refuse
    # `if_empty`, and the acks went first on this same channel, so a plain delete loses nothing.
    await channel.queue_delete(name)


async def _close(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        await channel.close()
