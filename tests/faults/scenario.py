"""One fault scenario's world: its database, broker probes, event recorder, oracle, consumer
processes and proxies, all torn down together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yarl
from sqlalchemy import make_url

from consumer.config import Settings
from contracts import BatchRequest, Topology
from publisher import BatchPublisher
from tests.faults.broker import EventRecorder, QueueProbe
from tests.faults.database import ScenarioDatabase
from tests.faults.oracle import Allowances, Oracle, Report
from tests.faults.processes import Consumers
from tests.faults.proxy import Tap, TcpProxy


@dataclass
class Scenario:
    settings: Settings
    db: ScenarioDatabase
    probe: QueueProbe
    oracle: Oracle
    publisher: BatchPublisher
    consumers: Consumers
    proxies: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def topology(self) -> Topology:
        return self.settings.topology

    async def publish(self, request: BatchRequest, *, times: int = 1) -> None:
        """Publish with confirms (the batch is then confirmed) and judge it at the end."""
        self.oracle.expect(request)
        for _ in range(times):
            await self.publisher.publish(request)

    async def check(self, allow: Allowances | None = None) -> Report:
        """The oracle, once everything settled; it ends the consumer processes."""
        return await self.oracle.check(self.consumers.kill_all, allow)

    async def proxy_to_broker(self, tap_factory: Callable[[], Tap] | None = None) -> TcpProxy:
        url = yarl.URL(self.settings.amqp_url)
        host, port = url.host or "127.0.0.1", url.port or 5672
        return await self.proxies.enter_async_context(TcpProxy(host, port, tap_factory=tap_factory))

    async def proxy_to_database(self, tap_factory: Callable[[], Tap] | None = None) -> TcpProxy:
        url = make_url(self.settings.database_url)
        host, port = url.host or "127.0.0.1", url.port or 5432
        return await self.proxies.enter_async_context(TcpProxy(host, port, tap_factory=tap_factory))

    def amqp_url_via(self, proxy: TcpProxy, **query: str) -> str:
        """The broker URL through `proxy`, e.g. with `heartbeat="2"`."""
        url = yarl.URL(self.settings.amqp_url).with_host("127.0.0.1").with_port(proxy.port)
        return str(url.update_query(query))

    def database_url_via(self, proxy: TcpProxy) -> str:
        """The database URL through `proxy`, in clear text so that a tap can read it."""
        url = make_url(self.settings.database_url).set(host="127.0.0.1", port=proxy.port)
        return url.update_query_dict({"ssl": "disable"}).render_as_string(hide_password=False)


def consumer_env(settings: Settings) -> dict[str, str]:
    """The environment of a `batchops consume` of this scenario (quick relay polls, JSON logs,
    a small pool: other test runs share the database server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHOPS_")}
    env.update(
        {
            "BATCHOPS_DATABASE_URL": settings.database_url,
            "BATCHOPS_AMQP_URL": settings.amqp_url,
            "BATCHOPS_NAMESPACE": settings.namespace,
            "BATCHOPS_DELIVERY_LIMIT": str(settings.delivery_limit),
            "BATCHOPS_LOG_FORMAT": "json",
            "BATCHOPS_RELAY_POLL_SECONDS": "0.05",
            "BATCHOPS_DB_POOL_SIZE": "4",
            "BATCHOPS_SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
    )
    return env


@contextlib.asynccontextmanager
async def open_scenario(settings: Settings, directory: Path) -> AsyncIterator[Scenario]:
    """The scenario of one test; consumer processes are killed first on the way out."""
    db = ScenarioDatabase(settings.database_url)
    probe = QueueProbe(settings.amqp_url)
    consumers = Consumers(consumer_env(settings), directory)
    try:
        async with (
            BatchPublisher(
                settings.amqp_url,
                namespace=settings.namespace,
                delivery_limit=settings.delivery_limit,
            ) as publisher,  # declares the topology: the results exchange exists from here on
            EventRecorder(settings.amqp_url, settings.topology.results_exchange) as recorder,
        ):
            oracle = Oracle(db, probe, recorder, settings.topology)
            scenario = Scenario(settings, db, probe, oracle, publisher, consumers)
            async with scenario.proxies:
                try:
                    yield scenario
                finally:
                    consumers.close()
    finally:
        await db.dispose()
