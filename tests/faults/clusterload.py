"""What the RabbitMQ cluster scenarios share: a scenario on the test's cluster and a database of
its own, two consumers that start on different nodes, and a producer that keeps publishing
through the fault, publishing again whatever the broker did not confirm."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import make_url

from consumer.adapters.database import create_engine
from consumer.adapters.seed import seed
from consumer.config import Settings
from contracts import BatchRequest
from publisher import NackedError, NotConfirmedError
from tests.conftest import ServiceUrls
from tests.faults.load import LOAD_BATCHES, mixed_load, orders_used
from tests.faults.processes import ConsumerProcess
from tests.faults.rabbitcluster import RabbitCluster
from tests.faults.scenario import Scenario, open_scenario
from tests.faults.underload import UNDER_WAY, strike_point
from tests.integration.helpers import eventually
from tests.support import run_admin_sql

# The initial load uses the first 560 orders; the producer's batches the ones after them.
PRODUCED_AT_MOST = 600
CLUSTER_ORDERS = 2 * (LOAD_BATCHES + PRODUCED_AT_MOST)
PUBLISH_DEADLINE = 60.0  # one batch confirmed, however many attempts it takes


@contextlib.asynccontextmanager
async def cluster_scenario(
    cluster: RabbitCluster, urls: ServiceUrls, template_database: str, directory: Path
) -> AsyncIterator[Scenario]:
    """A scenario whose broker is `cluster` (every node running at the start) and whose
    database, on the shared server (no test here stops it), holds CLUSTER_ORDERS orders."""
    await cluster.ensure_running()
    name = f"batchops_test_{uuid.uuid4().hex[:12]}"
    await run_admin_sql(
        urls.database_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'
    )
    url = make_url(urls.database_server).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await seed(conn, order_count=CLUSTER_ORDERS)
        finally:
            await engine.dispose()
        settings = Settings(
            amqp_url=cluster.url(first=0),
            database_url=url,
            namespace=f"cluster-{uuid.uuid4().hex[:12]}",
            relay_poll_seconds=0.05,
            retry_base_seconds=0.01,
            retry_max_seconds=0.05,
            shutdown_timeout_seconds=10,
            db_pool_size=4,
        )
        async with open_scenario(
            settings,
            directory,
            seeded_orders=range(1, CLUSTER_ORDERS + 1),
            durable_recorder=True,
        ) as scenario:
            yield scenario
    finally:
        await run_admin_sql(urls.database_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def two_consumers_under_load(
    scenario: Scenario, cluster: RabbitCluster, first_nodes: tuple[int, int]
) -> tuple[list[ConsumerProcess], list[BatchRequest]]:
    """Start two consumers whose node lists start at `first_nodes`, publish the load once they
    are ready, and return once they work through it (the caller strikes right away)."""
    consumers = list(
        await asyncio.gather(
            *(
                # Two batches in hand each: on a quiet machine two consumers at the default
                # prefetch finished 84 of the load's batches between "under way" and the
                # pause, leaving fewer in flight than the scenario's premise asks.
                scenario.consumers.start_probed(
                    BATCHOPS_AMQP_URL=cluster.url(first=first), BATCHOPS_PREFETCH="2"
                )
                for first in first_nodes
            )
        )
    )

    async def ready() -> bool:
        # Fully started, HTTP probes (and their own broker connection) included: a node
        # stopped during a process's start-up is another scenario.
        return all([await consumer.readiness() == 200 for consumer in consumers])

    async def under_way() -> bool:
        return await scenario.not_terminal(load) <= len(load) - UNDER_WAY

    await eventually(ready, what="both consumers ready", timeout=30)
    load = mixed_load()
    await scenario.publish_all(load)
    await eventually(under_way, what=f"{UNDER_WAY} batches of the load terminal", timeout=30)
    return consumers, load


@contextlib.asynccontextmanager
async def striking(
    scenario: Scenario, consumers: list[ConsumerProcess], load: list[BatchRequest]
) -> AsyncIterator[None]:
    """The block is the fault. The consumers are paused (SIGSTOP) while it runs, holding what
    they took: on two cores, two consumers otherwise finish the load in about the time a node
    takes to shut down, and the premise is that at least 200 batches are in flight when it is
    gone. They resume as soon as the fault is done, and find out then what it did."""
    for consumer in consumers:
        consumer.pause()
    try:
        await strike_point(scenario, load)
        yield
        await strike_point(scenario, load)
    finally:
        for consumer in consumers:
            consumer.resume()


@dataclass
class SteadyProducer:
    """Publishes fresh batches one after another, `interval` apart, until stopped. A publish the
    broker did not confirm (NotConfirmedError: the connection went; NackedError: it refused) is
    published again until it is confirmed, which the idempotent batch_id makes safe; a publish
    that neither confirms nor fails within PUBLISH_DEADLINE fails the scenario."""

    scenario: Scenario
    interval: float = 0.05
    confirmed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    _batches: list[BatchRequest] = field(
        default_factory=lambda: mixed_load(PRODUCED_AT_MOST, first_order=orders_used().stop)
    )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Publish for the duration of the block, and until the batch in hand is confirmed."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop))
        try:
            yield
        finally:
            stop.set()
            await task  # raises what went wrong

    async def _run(self, stop: asyncio.Event) -> None:
        for request in self._batches:
            if stop.is_set():
                return
            await self._publish_until_confirmed(request)
            self.confirmed += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def _publish_until_confirmed(self, request: BatchRequest) -> None:
        self.scenario.oracle.expect(request)
        deadline = time.monotonic() + PUBLISH_DEADLINE
        while True:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self.scenario.publisher.publish(request), remaining)
            except (NotConfirmedError, NackedError) as exc:
                self.failures[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            except TimeoutError:
                raise AssertionError(
                    f"publishing batch {request.batch_id} neither confirmed nor failed within "
                    f"{PUBLISH_DEADLINE}s: a publisher confirm was lost"
                ) from None
            return
