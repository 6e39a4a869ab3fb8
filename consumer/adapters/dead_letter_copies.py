"""Dead-lettering a request that waited in the database (fair share) rather than in the queue:
the broker cannot dead-letter a message it no longer holds, so a copy is published to
`{ns}.dlx` with the headers the broker would have set, and it reaches `{ns}.dead` like any
other dead letter (the console and `batchops dead-letters` list and replay it)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel

from consumer.service_layer.waiting_room import Parked
from contracts import Topology
from publisher import publish_confirmed

# Who published the request: a copy cannot carry the original `user_id` property (the broker
# accepts only the publishing connection's own user there).
PUBLISHED_BY_HEADER = "x-batchops-published-by"


class DeadLetterCopies:
    """Publishes through one channel with publisher confirms (see `attach`)."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._channel: AbstractChannel | None = None

    def attach(self, channel: AbstractChannel) -> None:
        self._channel = channel

    async def publish(self, parked: Parked, reason: str) -> None:
        """Put a copy of `parked` in `{ns}.dead`; `reason` as the broker's: `rejected` (the
        service refused it) or `delivery_limit` (it crashed every run)."""
        if self._channel is None:
            raise RuntimeError("no channel: call attach() first")
        topology = self._topology
        delivery = parked.delivery
        headers: dict[str, str] = {
            "x-first-death-reason": reason,
            "x-first-death-queue": topology.requests_queue,
            "x-first-death-exchange": topology.requests_exchange,
        }
        if delivery.user_id is not None:
            headers[PUBLISHED_BY_HEADER] = delivery.user_id
        if delivery.traceparent is not None:
            headers["traceparent"] = delivery.traceparent
        message = aio_pika.Message(
            delivery.body,
            headers=headers,  # type: ignore[arg-type]
            content_type=delivery.content_type,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            timestamp=delivery.published_at,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        exchange = await self._channel.get_exchange(topology.dead_letter_exchange, ensure=False)
        await publish_confirmed(exchange, message, parked.routing_key)
