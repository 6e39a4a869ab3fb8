"""RabbitMQ entrypoint: deliveries in, ack / dead-letter / requeue out. Nothing else."""

from __future__ import annotations

import asyncio

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from consumer.service_layer.executor import BatchExecutor, Disposition, Interrupted
from consumer.service_layer.intake import Delivery
from contracts import Topology
from publisher import declare_topology

log = structlog.get_logger(__name__)


def to_delivery(message: AbstractIncomingMessage) -> Delivery:
    count = (message.headers or {}).get("x-delivery-count", 0)
    return Delivery(
        body=message.body,
        user_id=message.user_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        published_at=message.timestamp,
        delivery_count=count if isinstance(count, int) else 0,
    )


class RequestConsumer:
    """Feeds the requests queue to the executor, up to `prefetch` batches at a time."""

    def __init__(self, executor: BatchExecutor, topology: Topology, prefetch: int) -> None:
        self._executor = executor
        self._topology = topology
        self._prefetch = prefetch
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def is_consuming(self) -> bool:
        return self._consumer_tag is not None

    async def start(self, channel: AbstractChannel) -> None:
        await channel.set_qos(prefetch_count=self._prefetch)
        await declare_topology(channel, self._topology)
        self._queue = await channel.get_queue(self._topology.requests_queue)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", queue=self._topology.requests_queue, prefetch=self._prefetch)

    async def stop(self, timeout: float) -> None:
        """Take no new batches, let running ones reach a safe point, then return."""
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:  # a dead channel has no consumer to cancel
                log.warning("consumer_cancel_failed", exc_info=True)
        self._consumer_tag = None
        self._executor.request_stop()
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=timeout)
            if late:
                log.warning("shutdown_left_batches_running", count=len(late))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._settle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=True, ignore_processed=True):
            try:
                disposition = await self._executor.handle(to_delivery(message))
            except Interrupted:
                log.info("batch_left_for_redelivery")
                await message.nack(requeue=True)
                return
            if disposition is Disposition.DEAD_LETTER:
                await message.reject(requeue=False)
            else:
                await message.ack()
