"""The webhook worker: POST each terminal batch's completion to its callback, signed, until a
2xx answer or the retry budget runs out (docs/contract.md, Webhooks).

It runs beside the relay in `batchops consume`/`serve`, on its own connections and with at
most `webhook_concurrency` tries at once: a slow or unreachable receiver holds back no event
publishing, only other webhooks beyond that bound. The SQL is in adapters/webhooks.py, the
HTTP in adapters/callbacks.py; the rules (signature, backoff) in domain/webhooks.py; this
module owns the loop, its wake-ups and its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import metrics
from consumer.adapters import callbacks
from consumer.adapters.webhooks import DueDelivery, record_delivered, record_failed, take_due
from consumer.domain.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, next_try, signature
from consumer.log_config import LogThrottle
from consumer.service_layer.faults import describe

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)
# Completions of this process wake the worker at once; those of other processes (and retries
# falling due) are found by polling this often.
POLL_SECONDS = 1.0
# A wake-up is followed by this wait, so that the completions of a busy service are looked
# for together: one query per interval instead of one per finished batch (most of which have
# no callback), and off the path of the completion event being published.
WAKE_COALESCE_SECONDS = 0.1
# A try's lease outlasts its timeout by this much, time enough to record how it ended; a
# worker that died during a try leaves it to be taken again once the lease is over.
LEASE_MARGIN_SECONDS = 5.0


class WebhookWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_seconds: float,
        retry_seconds: float,
        concurrency: int,
        allow_private: bool,
    ) -> None:
        self._engine = engine
        self._timeout = timeout_seconds
        self._budget = timedelta(seconds=retry_seconds)
        self._lease = timedelta(seconds=timeout_seconds + LEASE_MARGIN_SECONDS)
        self._concurrency = concurrency
        self._allow_private = allow_private
        self._wakeup = asyncio.Event()
        self._tries: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for due deliveries now (a batch of this process became terminal)."""
        self._wakeup.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; tries still running then get their timeout to end
        (one cut short is tried again by whoever takes it after its lease)."""
        async with callbacks.client(self._timeout) as http:
            while not stopping.is_set():
                self._wakeup.clear()
                free = self._concurrency - len(self._tries)
                taken = await self._take(free) if free > 0 else []
                for due in taken:
                    task = asyncio.create_task(self._deliver(http, due), name="webhook-try")
                    self._tries.add(task)
                    task.add_done_callback(self._tries.discard)
                if len(taken) < free or free == 0:
                    await self._idle(stopping)
            if self._tries:
                await asyncio.wait(self._tries, timeout=self._timeout + 1)
                for task in self._tries:
                    task.cancel()
                await asyncio.gather(*self._tries, return_exceptions=True)

    async def _take(self, limit: int) -> list[DueDelivery]:
        try:
            async with self._engine.begin() as conn:
                return await take_due(conn, limit, lease=self._lease, retry_budget=self._budget)
        except Exception as exc:  # noqa: BLE001 - the database away: poll again later
            _throttled.warning("webhook_poll_failed", error=describe(exc))
            return []

    async def _idle(self, stopping: asyncio.Event) -> None:
        """Until a wake-up (and the completions that follow it closely), shutdown, a try
        ending or the poll interval."""
        waiters = {
            asyncio.ensure_future(self._wakeup.wait()),
            asyncio.ensure_future(stopping.wait()),
        }
        try:
            await asyncio.wait(
                waiters | self._tries, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._wakeup.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), WAKE_COALESCE_SECONDS)

    async def _deliver(self, http: httpx.AsyncClient, due: DueDelivery) -> None:
        """One try of `due`, its outcome recorded (a failure to record leaves the lease to
        run out: the delivery is tried again, never lost)."""
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(json.loads(due.body)["event_id"]),
            SIGNATURE_HEADER: signature(due.secret, int(time.time()), due.body),
        }
        try:
            answer = await callbacks.post(
                http,
                due.url,
                due.body,
                headers,
                allow_private=self._allow_private,
                timeout_seconds=self._timeout,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is a failed try, recorded
            answer = callbacks.Answer(None, describe(exc))
        with structlog.contextvars.bound_contextvars(
            batch_id=str(due.batch_id), attempts=due.attempts, status=answer.status
        ):
            try:
                await self._record(due, answer)
            except Exception as exc:  # noqa: BLE001 - the lease brings the delivery back
                _throttled.warning("webhook_record_failed", error=describe(exc))

    async def _record(self, due: DueDelivery, answer: callbacks.Answer) -> None:
        if answer.delivered:
            assert answer.status is not None  # noqa: S101 - `delivered` says so
            metrics.WEBHOOK_TRIES.labels("delivered").inc()  # the try, even if recording fails
            async with self._engine.begin() as conn:
                await record_delivered(conn, due.batch_id, answer.status)
            log.info("webhook_delivered")
            return
        spread = random.random()  # noqa: S311 - jitter, not a secret
        next_at = next_try(due.attempts, datetime.now(UTC), due.deadline, spread)
        metrics.WEBHOOK_TRIES.labels("failed" if next_at else "given_up").inc()
        async with self._engine.begin() as conn:
            await record_failed(conn, due.batch_id, answer.status, answer.error, next_at)
        if next_at is None:
            log.warning("webhook_given_up", error=answer.error)
        else:
            log.info("webhook_failed", error=answer.error, next_attempt_at=next_at.isoformat())
