"""The relay's worker: publish committed events with confirms, then mark them published.

Batch events (completions, rejections, reply_to copies) come from the outbox; operation events
straight from operation_results, past the relay's position (adapters/operation_events.py). A crash
between the broker's confirm and the marking re-publishes the event (same event_id and body),
so delivery is at-least-once and never lossy. The SQL is in adapters/outbox.py and
adapters/operation_events.py, the AMQP in adapters/event_publisher.py; this module owns the
loop, its wake-ups and its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import stamina
import structlog

from consumer import metrics
from consumer.adapters.db_faults import classify
from consumer.adapters.event_publisher import EventPublisher
from consumer.adapters.operation_events import advance, batches_behind, take_operation_events
from consumer.adapters.outbox import settle, take_unsent
from consumer.adapters.pg import ConnectionPool
from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Interrupted
from consumer.service_layer.faults import Fault, describe
from consumer.service_layer.intake import as_uuid, field_of
from consumer.service_layer.unit_of_work import OutboxMessage
from publisher import PublishError, UnroutableError

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)
# Commits of the next few milliseconds join a pass: one pass per operation would cost the
# batch more CPU than the events themselves.
COALESCE_SECONDS = 0.005
# Longest wait between two failing passes (the broker or the database away).
MAX_BACKOFF_SECONDS = 5.0


class OutboxRelay:
    def __init__(
        self,
        pool: ConnectionPool,
        availability: DatabaseAvailability,
        publisher: EventPublisher,
        *,
        exchange: str,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._exchange = exchange  # of operation events: the results exchange
        self._availability = availability
        self.publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()

    def wake(self, *, urgent: bool = False) -> None:
        """Ask for a relay pass (called after a transaction that wrote events commits). Passes
        wait a few milliseconds for more commits to join them, unless `urgent`: a batch's last
        event (its completion) is what its producer waits for, and nothing follows it."""
        self._wakeup.set()
        if urgent:
            self._hurry.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until `stopping` is set, then flush what is committed and return."""
        while not stopping.is_set():
            try:
                more = await self._pass_through_faults(stopping)
            except Interrupted:
                break  # shutting down during an outage: nothing can be flushed
            if not more:
                await self._idle(stopping)
        await self.flush()

    async def flush(self) -> None:
        """Relay until nothing unsent is left (or the broker/database refuses)."""
        try:
            while await self.relay_once():
                pass
        except Exception as exc:  # noqa: BLE001 - shutting down: report, the rows stay unsent
            log.warning("relay_flush_failed", error=describe(exc))

    async def relay_once(self) -> bool:
        """Publish one batch of unsent events (operation events, then the outbox's); returns
        whether more may be waiting."""
        self._wakeup.clear()
        self._hurry.clear()
        session = await self._pool.acquire()
        try:
            # The outbox is read first: a completion seen now had its operations' rows
            # committed before it, so the operation events read next include them and go out
            # ahead of it; when they are more than one pass takes, it waits for the pass that
            # covers its own batch (not for the whole backlog: a flood never leaves it).
            unsent = await take_unsent(session, self._batch_size)
            operations = await take_operation_events(session, self._exchange, self._batch_size)
            messages = [] if operations is None else list(operations.messages)
            ready = unsent
            if operations is not None and not operations.complete:
                batch_of = {event.id: _batch_id(event.message.body) for event in unsent}
                named = [b for b in set(batch_of.values()) if b is not None]
                behind = await batches_behind(session, operations, named)
                ready = [event for event in unsent if batch_of[event.id] not in behind]
            messages += [event.message for event in ready]
            sent = await self._publish(messages) if messages else set()
            kept = [event for event in ready if id(event.message) in sent]
            if kept:
                await settle(session, kept)
            if operations is not None and len(sent) == len(messages):
                await advance(session, operations)
            await session.commit()
            if len(sent) < len(messages):
                missing = len(messages) - len(sent)
                raise PublishError(f"{missing} events were not confirmed; will retry")
            held_back = operations is not None and not operations.complete
            return held_back or len(unsent) == self._batch_size
        finally:
            await self._pool.release(session)

    async def _publish(self, messages: list[OutboxMessage]) -> set[int]:
        """The `id()` of each message the broker took: confirmed, or returned because nobody
        is bound for it (there is no one to deliver to)."""
        outcomes = await self.publisher.publish_all(messages)
        sent = set()
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, UnroutableError):
                metrics.EVENTS_RELAYED.labels("unroutable").inc()
                log.info(
                    "event_unroutable",
                    routing_key=message.routing_key,
                    batch_id=_batch_of(message.body),
                    correlation_id=message.correlation_id,
                    message_id=str(message.message_id),
                    event_id=str(message.message_id),
                )
                sent.add(id(message))
            elif outcome is not None:
                _throttled.warning(
                    "event_publish_failed",
                    routing_key=message.routing_key,
                    event_id=str(message.message_id),
                    error=describe(outcome),
                )
            else:
                metrics.EVENTS_RELAYED.labels("published").inc()
                sent.add(id(message))
        return sent

    async def _pass_through_faults(self, stopping: asyncio.Event) -> bool:
        """One pass, tried again with backoff while it fails; an unreachable database is
        waited out instead (raises Interrupted when shutdown comes first)."""
        async for attempt in stamina.retry_context(
            on=_worth_another_pass,
            attempts=None,
            timeout=None,
            wait_initial=self._poll_seconds,
            wait_max=MAX_BACKOFF_SECONDS,
            wait_jitter=self._poll_seconds,
        ):
            with attempt:
                if stopping.is_set():
                    return False
                try:
                    return await self.relay_once()
                except Exception as exc:
                    if classify(exc) is Fault.UNREACHABLE:
                        await self._availability.wait_until_reachable(exc)
                    else:
                        _throttled.warning("relay_pass_failed", error=describe(exc))
                    raise
        raise AssertionError("unreachable: the retries only end by returning or raising")

    async def _idle(self, stopping: asyncio.Event) -> None:
        """Until a commit wakes us, the poll interval passes or shutdown; then let the commits
        of the next few milliseconds join the pass."""
        waiters = {
            asyncio.ensure_future(self._wakeup.wait()),
            asyncio.ensure_future(stopping.wait()),
        }
        try:
            await asyncio.wait(
                waiters, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), COALESCE_SECONDS)


def _worth_another_pass(exc: Exception) -> bool:
    return not isinstance(exc, Interrupted)


def _batch_of(body: bytes) -> str | None:
    """The batch an event is about, for its log line (every event body names it)."""
    found = field_of(body, "batch_id")
    return str(found) if found is not None else None


def _batch_id(body: bytes) -> UUID | None:
    """`_batch_of` as a UUID; None when the body names no valid one."""
    return as_uuid(field_of(body, "batch_id"))
