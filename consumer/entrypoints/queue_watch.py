"""A loop that reads the depth and consumers of the batchops queues on a timer (a passive
declare each, adapters/broker_stats.py), publishes them as gauges and keeps the last reading for
the console."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aio_pika.abc import AbstractRobustConnection

from consumer import metrics
from consumer.adapters.broker_stats import QueueStats, queue_stats, watched_queues
from consumer.log_config import LogThrottle
from consumer.service_layer.faults import describe
from contracts import Topology
from publisher import connect_robust

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)


class QueueWatch:
    def __init__(self, amqp_url: str, topology: Topology, interval: float) -> None:
        self._amqp_url = amqp_url
        self._names = watched_queues(topology)
        self._interval = interval
        self._connection: AbstractRobustConnection | None = None
        self.latest: list[QueueStats] = []
        self.read_at: float | None = None  # time.time() of the last reading

    async def read(self) -> list[QueueStats]:
        """Read now (connecting on first use); the gauges and `latest` follow."""
        if self._connection is None:
            self._connection = await connect_robust(
                self._amqp_url, client_properties={"connection_name": "batchops queue watch"}
            )
        stats = await queue_stats(self._connection, self._names)
        for queue in stats:
            metrics.QUEUE_MESSAGES.labels(queue.name).set(queue.messages)
            metrics.QUEUE_CONSUMERS.labels(queue.name).set(queue.consumers)
        self.latest, self.read_at = stats, time.time()
        return stats

    async def run(self, stopping: asyncio.Event) -> None:
        """Read every `interval` seconds until `stopping`; a broker away is a warning a while."""
        while not stopping.is_set():
            try:
                await self.read()
            except Exception as exc:  # noqa: BLE001 - the gauges keep their last value
                _throttled.warning("queue_stats_unavailable", error=describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._interval)
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
