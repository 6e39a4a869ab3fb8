"""Whether the database answers. An outage is one state, not a stream of errors: it is logged
once when it starts and once when it ends, and everything that needs the database waits for
its end instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import stamina
import structlog

from consumer.service_layer.batch_run import Interrupted
from consumer.service_layer.faults import describe
from consumer.service_layer.telemetry import Telemetry

log = structlog.get_logger(__name__)


class DatabaseAvailability:
    """Shared by every unit of work of a process. `probe()` must raise when no connection can
    be made and answer a query; while an outage lasts, one task probes with backoff until the
    database answers again."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        *,
        probe_initial_seconds: float = 0.2,
        probe_max_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry or Telemetry()
        self._probe = probe
        self._probe_initial = probe_initial_seconds
        self._probe_max = probe_max_seconds
        self._clock = clock
        self._reachable = asyncio.Event()
        self._reachable.set()  # until a connection fails, assume it answers
        self._change = asyncio.Event()
        self._down_since = 0.0
        self._prober: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def reachable(self) -> bool:
        return self._reachable.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def check(self) -> bool:
        """Probe now; an outage starts when the database does not answer."""
        try:
            await self._probe()
        except Exception as exc:  # noqa: BLE001 - whatever the reason, it does not answer
            self._start_outage(exc)
            return False
        return True

    async def wait_until_reachable(self, cause: BaseException) -> None:
        """Called with the error of a connection that could not be made: return once the
        database answers (at once if it already does again). Raises Interrupted when the
        service shuts down first: the work in hand is left for redelivery."""
        if not self._closed and self.reachable and await self.check():
            return  # that connection failed, but the database answers: try again at once
        self._start_outage(cause)
        while not (self.reachable or self._closed):
            await self._change.wait()
        if self._closed:
            raise Interrupted("shut down while the database was unreachable")

    async def changed(self, seen: bool) -> bool:
        """Wait until reachability is no longer `seen` (or the service shuts down); returns
        what it is now."""
        while self.reachable == seen and not self._closed:
            await self._change.wait()
        return self.reachable

    def close(self) -> None:
        """Shutting down: stop probing and release everything that waits."""
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
        self._notify()

    def _start_outage(self, cause: BaseException) -> None:
        if self._closed or not self.reachable:
            return
        self._reachable.clear()
        self._down_since = self._clock()
        log.warning("database_unreachable", error=describe(cause))
        self._telemetry.database_reachable(False)
        self._notify()
        self._prober = asyncio.create_task(self._probe_until_reachable(), name="database-probe")

    async def _probe_until_reachable(self) -> None:
        async for attempt in stamina.retry_context(
            on=Exception,
            attempts=None,
            timeout=None,
            wait_initial=self._probe_initial,
            wait_max=self._probe_max,
            wait_jitter=self._probe_initial,
        ):
            with attempt:
                await self._probe()
        outage = self._clock() - self._down_since
        log.info("database_reachable", outage_seconds=round(outage, 3))
        self._telemetry.database_reachable(True)
        self._reachable.set()
        self._notify()

    def _notify(self) -> None:
        self._change.set()
        self._change = asyncio.Event()
