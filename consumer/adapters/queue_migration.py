"""Move the queues an earlier version declared to the current arguments, keeping their messages.

Two upgrades need it: the work queue gained at-least-once dead-lettering, and the dead-letter
queues `{ns}.dead` and `{ns}.dead.reconcile`, once classic queues on the node that declared
them, became quorum queues. Queue arguments cannot change in place, so `batchops queues
migrate` moves each outdated queue's messages through a holding queue: the holding queue is
bound where the queue is (so nothing routed meanwhile is lost or unroutable), the old queue is
drained into it and deleted, the queue is declared again with the current arguments, and the
holding queue is drained into it. Every step can be repeated: a run that stopped half-way is
finished by the next one. Each message is re-published with its body, properties and headers
and confirmed before the original is acknowledged, so nothing is lost; a crash between the two
may leave a copy in both queues, which the service's idempotent batch_id absorbs.
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
    """A queue cannot be migrated now (consumers are attached to it)."""


class QueueState(enum.Enum):
    CURRENT = "current"
    OUTDATED = "outdated"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class DeclaredQueue:
    """A queue batchops declares: its arguments, and where it is bound."""

    name: str
    arguments: dict[str, Any]
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class MigrationReport:
    queue: str
    was: QueueState
    moved_out: int  # old queue -> holding queue
    moved_in: int  # holding queue -> new queue


def declared_queues(topology: Topology) -> list[DeclaredQueue]:
    """Every queue of the topology, in the order they are migrated."""
    dead = topology.dead_letter_queue_arguments()
    return [
        DeclaredQueue(
            topology.requests_queue,
            topology.requests_queue_arguments(),
            topology.requests_exchange,
            "#",
        ),
        DeclaredQueue(topology.dead_letter_queue, dead, topology.dead_letter_exchange, ""),
        DeclaredQueue(
            topology.dead_letter_reconcile_queue, dead, topology.dead_letter_exchange, ""
        ),
    ]


def holding_queue(queue: str) -> str:
    return f"{queue}.migrating"


async def inspect(connection: AbstractRobustConnection, queue: DeclaredQueue) -> QueueState:
    """Whether `queue` exists, and with the current arguments."""
    if not await _exists(connection, queue.name):
        return QueueState.ABSENT
    channel = await connection.channel()
    try:
        # Re-declaring with other arguments than the queue has is refused: that is the test.
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    except ChannelPreconditionFailed:
        return QueueState.OUTDATED
    finally:
        await _close(channel)
    return QueueState.CURRENT


async def migrate(
    connection: AbstractRobustConnection, topology: Topology
) -> list[MigrationReport]:
    """Bring every queue of `topology` to the current arguments with every message it holds;
    one report per queue, in `declared_queues` order.

    Raises MigrationRefused while consumers are attached to an outdated queue (stop them
    first; nothing is moved then), and the broker's error when it refuses to re-publish a
    message (e.g. a `user_id` of another broker user: run as that user or as one with the
    `impersonator` tag).
    """
    queues = declared_queues(topology)
    states = [await inspect(connection, queue) for queue in queues]
    outdated = [q for q, state in zip(queues, states, strict=True) if state is QueueState.OUTDATED]
    for queue in outdated:
        await _refuse_if_consumed(connection, queue)
    moved_out = {queue.name: await _drain_old_queue(connection, queue) for queue in outdated}
    holding = {q.name for q in queues if await _exists(connection, holding_queue(q.name))}
    channel = await connection.channel(publisher_confirms=True)
    try:
        await declare_topology(channel, topology)
        moved_in = {
            queue.name: await _drain_holding_queue(channel, queue)
            for queue in queues
            if queue.name in holding
        }
    finally:
        await _close(channel)
    reports = [
        MigrationReport(
            queue.name, state, moved_out.get(queue.name, 0), moved_in.get(queue.name, 0)
        )
        for queue, state in zip(queues, states, strict=True)
    ]
    for report in reports:
        log.info(
            "queue_migrated",
            queue=report.queue,
            was=report.was.value,
            moved_out=report.moved_out,
            moved_in=report.moved_in,
        )
    return reports


async def _refuse_if_consumed(connection: AbstractRobustConnection, queue: DeclaredQueue) -> None:
    channel = await connection.channel()
    try:
        old = await channel.declare_queue(queue.name, passive=True)
        consumers = old.declaration_result.consumer_count or 0
    finally:
        await _close(channel)
    if consumers:
        raise MigrationRefused(
            f"{consumers} consumers are attached to {queue.name}: stop every batchops "
            "consume/serve of the previous version first"
        )


async def _drain_old_queue(connection: AbstractRobustConnection, queue: DeclaredQueue) -> int:
    channel = await connection.channel(publisher_confirms=True)
    try:
        old = await channel.declare_queue(queue.name, passive=True)
        holding = await _declare_holding(channel, queue)
        exchange = await channel.get_exchange(queue.exchange)
        await holding.bind(exchange, routing_key=queue.routing_key)
        # From here on, what is routed to the queue reaches only the holding queue.
        await old.unbind(exchange, routing_key=queue.routing_key)
        moved = await _move(channel, queue.name, holding.name)
        await _delete_emptied(channel, queue.name)
        log.info("old_queue_deleted", queue=queue.name, moved=moved)
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


async def _drain_holding_queue(channel: AbstractChannel, queue: DeclaredQueue) -> int:
    holding = await channel.declare_queue(holding_queue(queue.name), passive=True)
    exchange = await channel.get_exchange(queue.exchange)
    # The queue is bound again (declare_topology): stop routing to the holding queue.
    await holding.unbind(exchange, routing_key=queue.routing_key)
    moved = await _move(channel, holding.name, queue.name)
    await _delete_emptied(channel, holding.name)
    return moved


async def _declare_holding(channel: AbstractChannel, queue: DeclaredQueue) -> AbstractQueue:
    # A quorum queue like the ones it stands in for, without dead-lettering: it only holds.
    return await channel.declare_queue(
        holding_queue(queue.name), durable=True, arguments={"x-queue-type": "quorum"}
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


# Headers RabbitMQ adds while delivering and dead-lettering. A copy published again drops them:
# a stale x-delivery-count would make the consumer count the old deliveries against the new one.
_BROKER_HEADERS = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")


def producer_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    """`message`'s headers as its producer set them, without those the broker added."""
    return {
        key: value
        for key, value in (message.headers or {}).items()
        if not key.startswith(_BROKER_HEADERS)
    }


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
