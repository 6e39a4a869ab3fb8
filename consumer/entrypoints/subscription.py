"""The consumer's two subscriptions: the work queue, and the dead letters' reconciler. What
they are subscribed to, whether the broker still knows it, and how to take them up again.

The consumer (entrypoints/rabbit.py) decides when: at start, when the database comes and goes,
and when its watchdog finds a subscription cancelled or stalled. This module only does it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from contracts import Topology
from publisher import declare_topology

log = structlog.get_logger(__name__)
_LOOK_SECONDS = 5.0  # the look at the work queue's depth; the watchdog's next check retries

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Subscription:
    def __init__(
        self, topology: Topology, on_request: OnMessage, on_dead_letter: OnMessage
    ) -> None:
        self._topology = topology
        self._on_request = on_request
        self._on_dead_letter = on_dead_letter
        self.channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._reconcile: AbstractQueue | None = None
        self._reconcile_tag: str | None = None
        # As the broker last said (`still_subscribed`): false once it cancelled our consumer.
        self._broker_knows_us = False

    @property
    def active(self) -> bool:
        """Subscribed to the work queue on an open channel, as far as the broker last said."""
        if self.channel is None or self._tag is None or self.channel.is_closed:
            return False
        return self._broker_knows_us

    @property
    def ready_to_check(self) -> bool:
        """False while the robust connection restores the channel (and the consumer) itself."""
        return self.channel is not None and not self.channel.is_closed and self._queue is not None

    async def attach(
        self, channel: AbstractChannel, reconcile_channel: AbstractChannel, window: int
    ) -> None:
        """Declare the topology and find the queues; subscribe with `subscribe()`."""
        self.channel = channel
        await channel.set_qos(prefetch_count=window)
        await declare_topology(channel, self._topology)
        self._queue = await channel.get_queue(self._topology.requests_queue)
        # Dead letters run one at a time: a poison batch must not take a bystander down again.
        await reconcile_channel.set_qos(prefetch_count=1)
        self._reconcile = await reconcile_channel.get_queue(
            self._topology.dead_letter_reconcile_queue
        )

    async def subscribe(self) -> None:
        """Take deliveries from both queues (those already subscribed are left as they are)."""
        if self._queue is None or self._reconcile is None:
            raise RuntimeError("start() the consumer first")
        if self._tag is None:
            self._tag = await self._queue.consume(self._on_request)
        if self._reconcile_tag is None:
            self._reconcile_tag = await self._reconcile.consume(self._on_dead_letter)
        self._broker_knows_us = True

    async def unsubscribe(self) -> None:
        """Take no more deliveries; those in hand stay unacknowledged."""
        await _cancel(self._queue, self._tag)
        await _cancel(self._reconcile, self._reconcile_tag)
        self._tag = self._reconcile_tag = None

    async def still_subscribed(self) -> bool:
        """Whether the broker still delivers the work queue to us (it cancels a consumer whose
        queue was deleted, or on a node's maintenance)."""
        if self.channel is None or self._tag is None:
            return False
        underlay = await self.channel.get_underlay_channel()
        # aiormq drops a tag from `consumers` when the broker sends basic.cancel.
        consumers: dict[str, object] = getattr(underlay, "consumers", {})
        self._broker_knows_us = self._tag in consumers
        return self._broker_knows_us

    async def restore(self) -> None:
        """Subscribe to the work queue again after the broker cancelled us, declaring the
        topology first: the broker cancels the consumers of a deleted queue too."""
        assert self.channel is not None  # noqa: S101 - called with the channel open
        await declare_topology(self.channel, self._topology)
        self._queue = await self.channel.get_queue(self._topology.requests_queue)
        self._tag = None
        await self.subscribe()

    async def renew(self) -> None:
        """Cancel the work queue's subscription and take a new one (a stalled consumer)."""
        await _cancel(self._queue, self._tag)
        self._tag = None
        await self.subscribe()

    async def messages_ready(self) -> int:
        """The work queue's ready messages now (aio-pika answers a known queue's passive
        declare with its first count), on a channel of its own: the broker closes the channel
        of a passive declare that finds the queue deleted, and that must not be this one."""
        assert self.channel is not None  # noqa: S101 - called with the channel open
        connection = (await self.channel.get_underlay_channel()).connection
        look = await connection.channel(publisher_confirms=False, timeout=_LOOK_SECONDS)
        try:
            waiting = await look.queue_declare(
                self._topology.requests_queue, passive=True, timeout=_LOOK_SECONDS
            )
        finally:
            if not look.is_closed:
                await look.close()
        return waiting.message_count or 0


async def _cancel(queue: AbstractQueue | None, tag: str | None) -> None:
    if queue is not None and tag is not None:
        try:
            await queue.cancel(tag)
        except Exception as exc:  # noqa: BLE001 - a closed channel cancelled it anyway
            log.info("consumer_cancel_failed", error=repr(exc))
