"""Outbox relay: publish committed events with confirms, then settle their rows (see _SETTLE).

A crash between the broker's confirm and the settling re-publishes the event (same event_id and
body), so delivery is at-least-once and never lossy. Rows are picked by `sent_at IS NULL`, not
by id ranges, so rows committed out of id order are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from uuid import UUID

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange
from sqlalchemy import BigInteger, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer import metrics
from consumer.adapters.db_faults import classify
from consumer.adapters.pg import ConnectionPool, Statement
from consumer.adapters.tables import outbox
from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Interrupted
from consumer.service_layer.faults import Fault, describe
from publisher import PublishError, UnroutableError, publish_confirmed

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)
COALESCE_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class _Unsent:
    id: int
    exchange: str
    routing_key: str
    message_id: UUID
    correlation_id: str | None
    body: bytes
    mandatory: bool
    traceparent: str | None


# Sent operation events leave the outbox (operation_results keeps each one's body); sent batch
# events stay, marked, because a redelivered rejection re-sends its first body from there. A
# delete is also the cheaper write: marking rewrites the row and its index entries.
_SETTLE = Statement(
    update(outbox)
    .where(outbox.c.id == any_(bindparam("kept", type_=ARRAY(BigInteger))))
    .values(sent_at=func.now())
    .add_cte(
        delete(outbox)
        .where(outbox.c.id == any_(bindparam("gone", type_=ARRAY(BigInteger))))
        .cte("gone")
    )
)
_UNSENT = Statement(
    select(
        outbox.c.id,
        outbox.c.exchange,
        outbox.c.routing_key,
        outbox.c.message_id,
        outbox.c.correlation_id,
        outbox.c.body,
        outbox.c.mandatory,
        outbox.c.traceparent,
    )
    .where(outbox.c.sent_at.is_(None))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
    # Several relays (one per consumer process) share the table without overlap.
    .with_for_update(skip_locked=True)
)


class OutboxRelay:
    def __init__(
        self,
        pool: ConnectionPool,
        availability: DatabaseAvailability,
        *,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._availability = availability
        self._limit = {"limit": batch_size}
        self._channel: AbstractChannel | None = None
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()
        self._exchanges: dict[str, AbstractExchange] = {}

    def attach(self, channel: AbstractChannel) -> None:
        """Publish through `channel` (which must have publisher confirms on)."""
        self._channel = channel
        self._exchanges.clear()

    def wake(self, *, urgent: bool = False) -> None:
        """Ask for a relay pass (called after a transaction that wrote events commits). Passes
        wait a few milliseconds for more commits to join them, unless `urgent`: a batch's last
        event (its completion) is what its producer waits for, and nothing follows it."""
        self._wakeup.set()
        if urgent:
            self._hurry.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until `stopping` is set, then flush what is committed and return."""
        failures = 0
        while not stopping.is_set():
            try:
                relayed = await self.relay_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the database or broker is away; back off
                if classify(exc) is Fault.UNREACHABLE:
                    try:
                        await self._availability.wait_until_reachable(exc)
                    except Interrupted:
                        break  # shutting down during the outage: nothing can be flushed
                    continue
                failures += 1
                _throttled.warning("relay_pass_failed", error=describe(exc), consecutive=failures)
                relayed = 0
            if relayed < self._batch_size:
                # Back off up to 5 s while passes keep failing; a commit still wakes us at once.
                await self._wait(stopping, min(self._poll_seconds * 2**failures, 5.0))
                # Let the commits of the next few milliseconds join this pass: one pass per
                # operation would cost the batch more CPU than the events themselves.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), COALESCE_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        """Relay until nothing unsent is left (or the broker/database refuses)."""
        try:
            while await self.relay_once() == self._batch_size:
                pass
        except Exception as exc:  # noqa: BLE001 - shutting down: report, the rows stay unsent
            log.warning("relay_flush_failed", error=describe(exc))

    async def relay_once(self) -> int:
        """Publish one batch of unsent events; returns how many rows it took."""
        self._wakeup.clear()
        self._hurry.clear()
        session = await self._pool.acquire()
        try:
            rows = [_Unsent(*row) for row in await session.fetch(_UNSENT, self._limit)]
            if not rows:
                return 0
            sent: list[_Unsent] = []
            for row, outcome in await self._publish_all(rows):
                if isinstance(outcome, UnroutableError):
                    metrics.EVENTS_RELAYED.labels("unroutable").inc()
                    # Nobody subscribes to this routing key: there is no one to deliver to.
                    log.info(
                        "event_unroutable",
                        routing_key=row.routing_key,
                        event_id=str(row.message_id),
                    )
                    sent.append(row)
                elif isinstance(outcome, BaseException):
                    _throttled.warning(
                        "event_publish_failed",
                        routing_key=row.routing_key,
                        event_id=str(row.message_id),
                        error=describe(outcome),
                    )
                else:
                    metrics.EVENTS_RELAYED.labels("published").inc()
                    sent.append(row)
            if sent:
                await session.execute(
                    _SETTLE,
                    {
                        "gone": [row.id for row in sent if _is_operation_event(row.routing_key)],
                        "kept": [
                            row.id for row in sent if not _is_operation_event(row.routing_key)
                        ],
                    },
                )
                await session.commit()
            if len(sent) < len(rows):
                raise PublishError(f"{len(rows) - len(sent)} events were not confirmed; will retry")
            return len(rows)
        finally:
            await self._pool.release(session)

    async def _publish_all(self, rows: list[_Unsent]) -> list[tuple[_Unsent, object]]:
        """Publish concurrently, in waves of distinct message ids: the AMQP client matches a
        returned message to its publish by message_id, and a completion event and its reply_to
        copy share one."""
        waves: list[list[_Unsent]] = []
        seen: dict[UUID, int] = {}  # message id -> how many waves already carry it
        for row in rows:
            number = seen.get(row.message_id, 0)
            seen[row.message_id] = number + 1
            if number == len(waves):
                waves.append([])
            waves[number].append(row)
        done: list[tuple[_Unsent, object]] = []
        for wave in waves:
            outcomes = await asyncio.gather(*map(self._publish, wave), return_exceptions=True)
            done.extend(zip(wave, outcomes, strict=True))
        return done

    async def _publish(self, row: _Unsent) -> None:
        exchange = await self._exchange(row.exchange)
        message = aio_pika.Message(
            row.body,
            headers={"traceparent": row.traceparent} if row.traceparent else None,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(row.message_id),
            correlation_id=row.correlation_id,
            type=_event_type(row.routing_key),
        )
        await publish_confirmed(exchange, message, row.routing_key, mandatory=row.mandatory)

    async def _exchange(self, name: str) -> AbstractExchange:
        channel = self._channel
        if channel is None:
            raise RuntimeError("the relay has no channel: call attach() first")
        if name == "":
            return channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def _wait(self, stopping: asyncio.Event, timeout: float) -> None:
        waiters = {
            asyncio.ensure_future(self._wakeup.wait()),
            asyncio.ensure_future(stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


async def backlog(conn: AsyncConnection) -> tuple[int, float]:
    """Unsent events and the age in seconds of the oldest one (0 when none)."""
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.extract("epoch", func.now() - func.min(outbox.c.created_at)), 0),
            ).where(outbox.c.sent_at.is_(None))
        )
    ).one()
    return int(row[0]), float(row[1])


def _is_operation_event(routing_key: str) -> bool:
    return routing_key.startswith("operation.")


def _event_type(routing_key: str) -> str:
    return "batchops.operation.v1" if _is_operation_event(routing_key) else "batchops.batch.v1"
