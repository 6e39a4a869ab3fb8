"""One fault scenario's world: its database, broker probes, event recorder, oracle, consumer
processes and proxies, all torn down together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yarl
from sqlalchemy import make_url

from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.domain.model import Actor
from consumer.service_layer.job_control import JobControl, Verdict
from contracts import BatchRequest, Topology
from publisher import BatchPublisher
from tests.faults.broker import EventRecorder, QueueProbe
from tests.faults.database import ScenarioDatabase
from tests.faults.model import SEEDED_ORDERS
from tests.faults.oracle import TERMINAL, Allowances, Oracle, Report
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
    job_control: JobControl
    proxies: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    @property
    def topology(self) -> Topology:
        return self.settings.topology

    async def publish(self, request: BatchRequest, *, times: int = 1) -> None:
        """Publish with confirms (the batch is then confirmed) and judge it at the end."""
        self.oracle.expect(request)
        for _ in range(times):
            await self.publisher.publish(request)

    async def publish_all(self, requests: Sequence[BatchRequest], concurrency: int = 32) -> None:
        """Publish a load, a few dozen requests at a time, each confirmed by the broker."""
        for request in requests:
            self.oracle.expect(request)
        for start in range(0, len(requests), concurrency):
            chunk = requests[start : start + concurrency]
            await asyncio.gather(*(self.publisher.publish(r) for r in chunk))

    async def publish_commuting(self, pairs: Sequence[tuple[BatchRequest, BatchRequest]]) -> None:
        """Publish pairs of notes batches that share orders (see the oracle): every pair's
        first batch, in order, then every second one."""
        for first, second in pairs:
            self.oracle.expect_commuting(first, second)
        for request in [first for first, _ in pairs] + [second for _, second in pairs]:
            await self.publisher.publish(request)

    async def cancel(self, batch_id: uuid.UUID, actor: Actor | None = None) -> Verdict:
        """Cancel as the service's job control does (for `actor`; None: an operator, as
        `batchops cancel`); an accepted cancel makes the oracle judge the batch as cancelled."""
        verdict = await self.job_control.cancel(batch_id, actor)
        if verdict is Verdict.ACCEPTED:
            self.oracle.expect_cancelled(batch_id)
        return verdict

    async def not_terminal(self, requests: Sequence[BatchRequest]) -> int:
        """How many of `requests` are not terminal yet (not even recorded, or running)."""
        terminal = await self.db.scalar(
            "SELECT count(*) FROM batch_operations WHERE batch_id = ANY(:ids)"
            " AND status = ANY(:terminal)",
            ids=[r.batch_id for r in requests],
            terminal=sorted(TERMINAL),
        )
        return len(requests) - int(terminal)

    async def require_in_flight(self, requests: Sequence[BatchRequest], at_least: int) -> int:
        """The scenario's premise, checked as the fault strikes: at least `at_least` of
        `requests` are not terminal yet. Returns how many are not."""
        waiting = await self.not_terminal(requests)
        assert waiting >= at_least, (
            f"only {waiting} of {len(requests)} batches were still in flight when the fault "
            f"struck, fewer than {at_least}: the scenario did not test a fault under load"
        )
        return waiting

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
async def open_scenario(
    settings: Settings,
    directory: Path,
    *,
    observer_url: str | None = None,
    seeded_orders: range = SEEDED_ORDERS,
    durable_recorder: bool = False,
) -> AsyncIterator[Scenario]:
    """The scenario of one test; consumer processes are killed first on the way out. The
    test's own view of the database connects to `observer_url` (by default the service's).
    `durable_recorder`: record events in a quorum queue, for scenarios that stop broker nodes."""
    db = ScenarioDatabase(observer_url or settings.database_url)
    probe = QueueProbe(settings.amqp_url)
    consumers = Consumers(consumer_env(settings), directory)
    # The service's own job control, wired as a process serving the API has it (no consumer).
    wired = bootstrap(settings, consume=False)
    try:
        async with (
            BatchPublisher(
                settings.amqp_url,
                namespace=settings.namespace,
                delivery_limit=settings.delivery_limit,
            ) as publisher,  # declares the topology: the results exchange exists from here on
            EventRecorder(
                settings.amqp_url,
                settings.topology.results_exchange,
                f"{settings.namespace}.recorder" if durable_recorder else None,
            ) as recorder,
        ):
            oracle = Oracle(db, probe, recorder, settings.topology, seeded_orders)
            scenario = Scenario(
                settings, db, probe, oracle, publisher, consumers, wired.job_control
            )
            async with scenario.proxies:
                try:
                    yield scenario
                finally:
                    consumers.close()
    finally:
        await wired.close()
        await db.dispose()
