"""Publishing outbox events to RabbitMQ with publisher confirms and mandatory routing."""

from __future__ import annotations

import asyncio
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from consumer.service_layer.unit_of_work import OutboxMessage
from contracts import BATCH_EVENT_TYPE, OPERATION_EVENT_TYPE, is_operation_routing_key
from publisher import publish_confirmed


class EventPublisher:
    """Publishes through one channel with publisher confirms (see `attach`)."""

    def __init__(self) -> None:
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    def attach(self, channel: AbstractChannel) -> None:
        """Publish through `channel` (which must have publisher confirms on)."""
        self._channel = channel
        self._exchanges.clear()

    async def publish_all(self, messages: list[OutboxMessage]) -> list[BaseException | None]:
        """Publish concurrently; one outcome per message, in order: None when the broker
        confirmed it, else the error (UnroutableError when no queue was bound for it).

        Messages go in waves of distinct message ids: the AMQP client matches a returned message
        to its publish by message_id, and a completion event and its reply_to copy share one."""
        waves: list[list[int]] = []
        seen: dict[UUID, int] = {}  # message id -> how many waves already carry it
        for position, message in enumerate(messages):
            number = seen.get(message.message_id, 0)
            seen[message.message_id] = number + 1
            if number == len(waves):
                waves.append([])
            waves[number].append(position)
        outcomes: list[BaseException | None] = [None] * len(messages)
        for wave in waves:
            done = await asyncio.gather(
                *(self._publish(messages[i]) for i in wave), return_exceptions=True
            )
            for position, outcome in zip(wave, done, strict=True):
                outcomes[position] = outcome
        return outcomes

    async def _publish(self, message: OutboxMessage) -> None:
        exchange = await self._exchange(message.exchange)
        amqp_message = aio_pika.Message(
            message.body,
            headers={"traceparent": message.traceparent} if message.traceparent else None,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(message.message_id),
            correlation_id=message.correlation_id,
            type=(
                OPERATION_EVENT_TYPE
                if is_operation_routing_key(message.routing_key)
                else BATCH_EVENT_TYPE
            ),
        )
        await publish_confirmed(
            exchange, amqp_message, message.routing_key, mandatory=message.mandatory
        )

    async def _exchange(self, name: str) -> AbstractExchange:
        channel = self._channel
        if channel is None:
            raise RuntimeError("the event publisher has no channel: call attach() first")
        if name == "":
            return channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange
