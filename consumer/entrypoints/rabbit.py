"""RabbitMQ entrypoint: deliveries in, ack / dead-letter / requeue out; a watchdog that keeps
the subscription alive, and no subscription at all while the database is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from uuid import UUID

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumer import metrics
from consumer.adapters.dead_letter_copies import DeadLetterCopies
from consumer.entrypoints.deliveries import channel_open, gave_up_on, to_delivery
from consumer.entrypoints.parking import ParkedRequests
from consumer.entrypoints.subscription import Subscription
from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.fair_share import FairScheduler
from consumer.service_layer.intake import Delivery, peek_actor, peek_batch
from consumer.service_layer.waiting_room import WaitingRoom
from contracts import Topology

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)


class RequestConsumer:
    """Feeds the requests queue to the executor, up to `prefetch` batches at a time.

    With fair share on, a request that cannot start at once waits in the database's waiting
    room (entrypoints/parking.py), and a slot that frees takes the next one from there, an
    actor under its share first (docs/operations.md, "Fair share"). The broker hands the
    consumer up to `window` deliveries, so that requests behind the running ones reach the
    room. Without a room (unit tests), the deliveries beyond the prefetch wait in memory,
    unacknowledged, and FairScheduler picks which runs next. With fair share off the window is
    the prefetch, and batches run in delivery order.

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
        waiting_room: WaitingRoom | None = None,
        delivery_limit: int = 5,
        lease_seconds: float = 10.0,
    ) -> None:
        self._executor = executor
        # Fair share needs more deliveries in hand than slots: with a window of the prefetch
        # nothing ever waits, so it is off, and no delivery's body is peeked for its actor.
        self._window = max(window or prefetch, prefetch) if fair_share is not None else prefetch
        share = fair_share if self._window > prefetch else None
        self.scheduler = FairScheduler(
            # Without a waiting room, what waits is held here (with one, the room counts it).
            prefetch,
            share,
            metrics.FAIR_SHARE_WAITING.set if waiting_room is None else None,
        )
        # Entered around every batch; BATCHOPS_SERIALIZE_BATCHES makes it one batch at a time.
        self._gate = gate or contextlib.nullcontext
        self.dead_letter_copies = DeadLetterCopies(topology)
        self.parking = (
            self._parking(waiting_room, delivery_limit, lease_seconds)
            if waiting_room is not None and share is not None
            else None
        )
        self._availability = availability
        self._topology = topology
        self._prefetch = prefetch
        self._subscription = Subscription(topology, self._on_message, self._on_dead_letter)
        # True while the database is unreachable: no subscription, on purpose.
        self._paused = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._last_delivery = time.monotonic()
        self.resubscriptions = 0

    def _parking(
        self, room: WaitingRoom, delivery_limit: int, lease_seconds: float
    ) -> ParkedRequests:
        return ParkedRequests(
            room,
            self.scheduler,
            self._executor,
            self.dead_letter_copies,
            delivery_limit=delivery_limit,
            lease_seconds=lease_seconds,
            gate=self._gate,
        )

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel requests are delivered on (tests close it under the consumer)."""
        return self._subscription.channel

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def is_consuming(self) -> bool:
        """True while subscribed on an open channel (false after a broker-side cancel)."""
        return self._subscription.active

    async def start(
        self,
        channel: AbstractChannel,
        reconcile_channel: AbstractChannel,
        confirms_channel: AbstractChannel | None = None,
    ) -> None:
        """Declare the topology and subscribe, unless the database does not answer: then the
        subscription waits for it (see `follow_database`). `confirms_channel` (publisher
        confirms on) carries the copies of parked requests that are dead-lettered."""
        if confirms_channel is not None:
            self.dead_letter_copies.attach(confirms_channel)
        await self._subscription.attach(channel, reconcile_channel, self._window)
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
        await self._subscription.subscribe()
        self._subscribed()

    def _subscribed(self, *, again: bool = False) -> None:
        # Counted as fed: a new subscription has not had the time to be handed anything.
        self._last_delivery = time.monotonic()
        if again:
            self.resubscriptions += 1
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
        await self._subscription.unsubscribe()
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
        subscription = self._subscription
        if not subscription.ready_to_check:
            return  # the robust connection is reconnecting; it restores the consumer itself
        if not await subscription.still_subscribed():
            log.warning("consumer_cancelled_resubscribing")
            await subscription.restore()
            self._subscribed(again=True)
            return
        idle_for = time.monotonic() - self._last_delivery
        if self._in_flight or idle_for <= stall_seconds:
            return  # busy, or fed lately: no stall, and no need to ask the broker
        ready = await self._messages_ready()
        if ready:
            log.warning("consumer_stalled_resubscribing", ready=ready, idle_seconds=idle_for)
            await subscription.renew()
            self._subscribed(again=True)

    async def _messages_ready(self) -> int:
        """The work queue's depth now (a method of its own: tests make it answer)."""
        return await self._subscription.messages_ready()

    async def run_waiting_room(self) -> None:
        """Until stop(): run parked requests in free slots and keep their leases (nothing to
        do with fair share off)."""
        if self.parking is None:
            return
        await asyncio.gather(self.parking.fill_slots(), self.parking.keep_leases())

    async def stop(self, timeout: float) -> None:
        """Take no new batches, let running ones reach a safe point, then return."""
        # Before any await: no batch may start another operation once stopping is logged.
        self._executor.request_stop()
        self._stopping.set()
        if self.parking is not None:
            self.parking.stop()
        # Held deliveries do not start now; unacknowledged, they go back when the channel closes.
        self.scheduler.close()
        log.info("consumer_stopping", in_flight=len(self._in_flight), timeout=timeout)
        await self._subscription.unsubscribe()
        running = self._in_flight | (self.parking.runs if self.parking is not None else set())
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            if late:
                log.warning("shutdown_left_batches_running", count=len(late))
        if self.parking is not None:
            self.parking.abandon()

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
        if self.parking is not None:
            batch = peek_batch(delivery.body)
            actor = batch[1] if batch is not None else None
            if batch is not None and await self._parked(message, delivery, batch):
                return
        else:
            actor = peek_actor(delivery.body) if self.scheduler.share is not None else None
        if not await self.scheduler.turn(actor, live=lambda: channel_open(message)):
            return  # shutting down, or its channel is gone: the broker hands it out again
        try:
            await self._run(message, delivery)
        finally:
            self.scheduler.done(actor)

    def _starts_now(self, actor: int) -> bool:
        """A slot is free, and no parked request would be overtaken unfairly: parked requests
        go first unless this actor is under its share and has none of its own parked here (an
        actor held under its share while a flood is taken in must keep its own order)."""
        scheduler, parking = self.scheduler, self.parking
        if not scheduler.has_free_slot():
            return False
        if parking is None or not parking.known:
            return True
        return actor not in scheduler.at_share() and not parking.may_hold_requests_of(actor)

    async def _parked(
        self, message: AbstractIncomingMessage, delivery: Delivery, batch: tuple[UUID, int]
    ) -> bool:
        """Unless it can start now: store the request in the waiting room, then acknowledge
        it. True when that is done, or when shutting down while the database is away
        (Interrupted: left unacknowledged for the broker to hand out again). False when it can
        start, or when the database refused it: then it waits here, in memory, and runs from
        the delivery as without a waiting room. A lost acknowledgement brings the request
        again, and it is stored once."""
        assert self.parking is not None  # noqa: S101 - only called with fair share on
        if self._starts_now(batch[1]):
            return False
        try:
            await self.parking.park(delivery, batch, message.routing_key or "")
        except Interrupted:
            log.info("request_left_for_redelivery")
            return True
        except Exception as exc:  # noqa: BLE001 - a value the database refuses, a long refusal
            log.warning("request_not_parked", error=repr(exc))
            return False
        # Its channel closed meanwhile: the broker hands it out again (and it is stored once);
        # an acknowledgement there would only fail.
        if channel_open(message):
            await message.ack()
        return True

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
