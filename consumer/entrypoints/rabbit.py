"""RabbitMQ entrypoint: deliveries in, ack / dead-letter / requeue out; a watchdog that keeps
the subscription alive, and no subscription at all while the database is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelInvalidStateError

from consumer import metrics
from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.fair_share import FairScheduler
from consumer.service_layer.intake import Delivery, peek_actor
from contracts import Topology
from publisher import declare_topology

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)


def to_delivery(
    message: AbstractIncomingMessage, *, dead_lettered: bool = False, give_up: bool = False
) -> Delivery:
    headers = message.headers or {}
    count = headers.get("x-delivery-count", 0)
    traceparent = headers.get("traceparent")
    return Delivery(
        body=message.body,
        user_id=message.user_id,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        published_at=message.timestamp,
        delivery_count=count if isinstance(count, int) else 0,
        traceparent=traceparent if isinstance(traceparent, str) else None,
        dead_lettered=dead_lettered,
        give_up=give_up,
    )


def gave_up_on(message: AbstractIncomingMessage, requests_queue: str) -> bool:
    """True for a dead letter that the broker dropped after the delivery limit (not one we
    rejected ourselves as invalid)."""
    headers = message.headers or {}
    return (
        headers.get("x-first-death-reason") == "delivery_limit"
        and headers.get("x-first-death-queue") == requests_queue
    )


class RequestConsumer:
    """Feeds the requests queue to the executor, up to `prefetch` batches at a time.

    With fair share on, the broker hands it up to `window` deliveries; those that wait for a
    slot are held unacknowledged, and FairScheduler picks which runs next (docs/operations.md,
    "Fair share"). Otherwise the window is the prefetch, and batches run in delivery order.

    While the database is unreachable it takes no deliveries (it cancels its subscriptions) and
    the batches in hand wait, unacknowledged: a requeue would spend a delivery attempt, and
    the delivery limit is for poison messages, not for outages."""

    def __init__(
        self,
        executor: BatchExecutor,
        topology: Topology,
        prefetch: int,
        availability: DatabaseAvailability,
        gate: Callable[[], AbstractAsyncContextManager[None]] | None = None,
        fair_share: int | None = None,
        window: int | None = None,
    ) -> None:
        self._executor = executor
        # Fair share needs more deliveries in hand than slots: with a window of the prefetch
        # nothing ever waits, so it is off, and no delivery's body is peeked for its actor.
        self._window = max(window or prefetch, prefetch) if fair_share is not None else prefetch
        share = fair_share if self._window > prefetch else None
        self.scheduler = FairScheduler(prefetch, share, metrics.FAIR_SHARE_WAITING.set)
        self._availability = availability
        # Entered around every batch; BATCHOPS_SERIALIZE_BATCHES makes it one batch at a time.
        self._gate = gate or contextlib.nullcontext
        self._topology = topology
        self._prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._reconcile: AbstractQueue | None = None
        self._reconcile_tag: str | None = None
        # True while the database is unreachable: no subscription, on purpose.
        self._paused = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._last_delivery = time.monotonic()
        # Kept by the watchdog: false once the broker cancelled our consumer.
        self._broker_knows_us = False
        self.resubscriptions = 0

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel requests are delivered on (tests close it under the consumer)."""
        return self._channel

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def is_consuming(self) -> bool:
        """True while subscribed on an open channel (false after a broker-side cancel)."""
        if self._channel is None or self._consumer_tag is None or self._channel.is_closed:
            return False
        return self._broker_knows_us

    async def _still_subscribed(self) -> bool:
        if self._channel is None or self._consumer_tag is None:
            return False
        underlay = await self._channel.get_underlay_channel()
        # aiormq drops a tag from `consumers` when the broker sends basic.cancel.
        consumers: dict[str, object] = getattr(underlay, "consumers", {})
        return self._consumer_tag in consumers

    async def start(self, channel: AbstractChannel, reconcile_channel: AbstractChannel) -> None:
        """Declare the topology and subscribe, unless the database does not answer: then the
        subscription waits for it (see `follow_database`)."""
        self._channel = channel
        await channel.set_qos(prefetch_count=self._window)
        await declare_topology(channel, self._topology)
        self._queue = await channel.get_queue(self._topology.requests_queue)
        # Dead letters run one at a time: a poison batch must not take a bystander down again.
        await reconcile_channel.set_qos(prefetch_count=1)
        self._reconcile = await reconcile_channel.get_queue(
            self._topology.dead_letter_reconcile_queue
        )
        if await self._availability.check():
            await self._subscribe()
        else:
            self._paused = True

    async def follow_database(self) -> None:
        """Until stop(): unsubscribe when the database stops answering, subscribe again once
        it answers."""
        while not self._stopping.is_set():
            reachable = await self._availability.changed(not self._paused)
            if self._stopping.is_set():
                return
            self._paused = not reachable
            try:
                if reachable:
                    await self._subscribe()
                else:
                    await self._unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the broker may be away: the watchdog retries
                log.warning("subscription_change_failed", error=repr(exc), subscribe=reachable)

    async def _subscribe(self) -> None:
        if self._queue is None or self._reconcile is None:
            raise RuntimeError("start() the consumer first")
        if self._consumer_tag is None:
            self._consumer_tag = await self._queue.consume(self._on_message)
        if self._reconcile_tag is None:
            self._reconcile_tag = await self._reconcile.consume(self._on_dead_letter)
        self._broker_knows_us = True
        self._last_delivery = time.monotonic()
        log.info(
            "consuming",
            queue=self._topology.requests_queue,
            prefetch=self._prefetch,
            window=self._window,
            # uvloop or asyncio (BATCHOPS_EVENT_LOOP)
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )

    async def _unsubscribe(self) -> None:
        """Take no more deliveries; those in hand stay unacknowledged and wait."""
        for queue, tag in (
            (self._queue, self._consumer_tag),
            (self._reconcile, self._reconcile_tag),
        ):
            if queue is not None and tag is not None:
                try:
                    await queue.cancel(tag)
                except Exception as exc:  # noqa: BLE001 - a closed channel cancelled it anyway
                    log.info("consumer_cancel_failed", error=repr(exc))
        self._consumer_tag = self._reconcile_tag = None
        log.info("consuming_paused", in_hand=len(self._in_flight))

    async def watch(self, interval: float, stall_seconds: float) -> None:
        """Until stop(): re-subscribe when the broker cancelled us, or when messages wait
        while nothing has been delivered to an idle consumer for `stall_seconds`."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            self.scheduler.drop_stale()
            try:
                await self._check_liveness(stall_seconds)
            except Exception as exc:  # noqa: BLE001 - the broker may be away; try again later
                _throttled.warning("watchdog_check_failed", error=repr(exc))

    async def _check_liveness(self, stall_seconds: float) -> None:
        if self._paused:
            return  # unsubscribed on purpose until the database answers
        if self._channel is None or self._channel.is_closed or self._queue is None:
            return  # the robust connection is reconnecting; it restores the consumer itself
        self._broker_knows_us = await self._still_subscribed()
        if not self._broker_knows_us:
            log.warning("consumer_cancelled_resubscribing")
            # The broker cancels consumers of a deleted queue too: declare it again first.
            await declare_topology(self._channel, self._topology)
            self._queue = await self._channel.get_queue(self._topology.requests_queue)
            self._consumer_tag = None
            await self._subscribe()
            self.resubscriptions += 1
            return
        waiting = await self._channel.declare_queue(self._topology.requests_queue, passive=True)
        ready = waiting.declaration_result.message_count or 0
        idle_for = time.monotonic() - self._last_delivery
        if ready and not self._in_flight and idle_for > stall_seconds:
            log.warning("consumer_stalled_resubscribing", ready=ready, idle_seconds=idle_for)
            await self._resubscribe()
            self.resubscriptions += 1

    async def _resubscribe(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:
                log.info("consumer_cancel_failed", exc_info=True)
        self._consumer_tag = None
        await self._subscribe()

    async def stop(self, timeout: float) -> None:
        """Take no new batches, let running ones reach a safe point, then return."""
        # Before any await: no batch may start another operation once stopping is logged.
        self._executor.request_stop()
        self._stopping.set()
        # Held deliveries do not start now; unacknowledged, they go back when the channel closes.
        self.scheduler.close()
        log.info("consumer_stopping", in_flight=len(self._in_flight), timeout=timeout)
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:
                log.warning("consumer_cancel_failed", exc_info=True)
        self._consumer_tag = None
        if self._reconcile is not None and self._reconcile_tag is not None:
            try:
                await self._reconcile.cancel(self._reconcile_tag)
            except Exception:
                log.warning("consumer_cancel_failed", exc_info=True)
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=timeout)
            if late:
                log.warning("shutdown_left_batches_running", count=len(late))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._last_delivery = time.monotonic()
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._settle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Bring the batch of a request the broker gave up on to a terminal status (`{ns}.dead`
        keeps the request for operators). It first runs once more, alone: a batch that was only
        in flight beside a poison one completes normally. If that run crashes us too, the
        redelivered copy gives up on the operation in hand."""
        async with message.process(requeue=True, ignore_processed=True):
            if not gave_up_on(message, self._topology.requests_queue):
                return
            log.error(
                "request_dead_lettered_by_broker",
                message_id=message.message_id,
                giving_up=message.redelivered,
            )
            metrics.DEAD_LETTERED.inc()
            delivery = to_delivery(message, dead_lettered=True, give_up=bool(message.redelivered))
            with metrics.IN_FLIGHT.track_inprogress():
                await self._executor.handle(delivery)

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        delivery = to_delivery(message)
        if message.redelivered or delivery.delivery_count:
            metrics.REDELIVERIES.inc()
        actor = peek_actor(delivery.body) if self.scheduler.share is not None else None
        if not await self.scheduler.turn(actor, live=lambda: _channel_open(message)):
            return  # shutting down, or its channel is gone: the broker hands it out again
        try:
            await self._run(message, delivery)
        finally:
            self.scheduler.done(actor)

    async def _run(self, message: AbstractIncomingMessage, delivery: Delivery) -> None:
        async with message.process(requeue=True, ignore_processed=True):
            try:
                with metrics.IN_FLIGHT.track_inprogress():
                    async with self._gate():
                        disposition = await self._executor.handle(delivery)
            except Interrupted:
                log.info("batch_left_for_redelivery")
                await message.nack(requeue=True)
                return
            if disposition is Disposition.DEAD_LETTER:
                metrics.DEAD_LETTERED.inc()
                await message.reject(requeue=False)
            else:
                await message.ack()


def _channel_open(message: AbstractIncomingMessage) -> bool:
    """False once the channel the message came on closed: a robust connection's new channel
    knows nothing of its delivery tag, and the broker has handed the message back already."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel closed
    except ChannelInvalidStateError:
        return False
    return True
