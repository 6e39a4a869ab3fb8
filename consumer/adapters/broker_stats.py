"""Queue depth and consumer count read from the broker with a passive declare: cheap (one
round trip per queue), needs no management plugin, and never creates a queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from contracts import Topology


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    exists: bool
    messages: int = 0  # ready, not yet handed to a consumer
    consumers: int = 0


def watched_queues(topology: Topology) -> list[str]:
    """The queues an operator watches: work, dead letters, and the dead letters' reconciler."""
    return [
        topology.requests_queue,
        topology.dead_letter_queue,
        topology.dead_letter_reconcile_queue,
    ]


async def queue_stats(connection: AbstractConnection, names: Sequence[str]) -> list[QueueStats]:
    """Each queue's figures; a queue that does not exist is reported, not created. The broker
    closes a channel on a missing queue, so each missing one costs a new channel."""
    found: list[QueueStats] = []
    channel: AbstractChannel | None = None
    try:
        for name in names:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                found.append(QueueStats(name, exists=False))
                continue
            result = queue.declaration_result
            found.append(
                QueueStats(
                    name,
                    exists=True,
                    messages=int(result.message_count or 0),
                    consumers=int(result.consumer_count or 0),
                )
            )
    finally:
        if channel is not None and not channel.is_closed:
            await channel.close()
    return found
