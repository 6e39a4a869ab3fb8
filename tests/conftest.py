"""Real PostgreSQL and RabbitMQ for the tests: `BATCHOPS_TEST_*` URLs when set, the local
services when they answer, testcontainers otherwise. Every test gets its own database
(cloned from a migrated template) and its own broker namespace. With
`BATCHOPS_TEST_PGBOUNCER=1` the service under test reaches its database through a PgBouncer in
transaction pooling mode (`make pgbouncer-test`); the tests' own look-ups go straight to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aio_pika
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url

from consumer.adapters.database import create_database_if_missing, create_engine, upgrade_database
from consumer.adapters.seed import seed
from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings
from tests.pgbouncer import PgBouncer
from tests.support import EventLog, listen, reachable, run_admin_sql

# The properties check outcomes, not speed: beside brokers, databases and the slow fault
# scenarios on two cores, one example can take longer than Hypothesis's 200 ms deadline (seen
# once on the intake property, which 30,000 examples without a deadline did not fail).
hypothesis_settings.register_profile("batchops", deadline=None)
hypothesis_settings.load_profile("batchops")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist with `--dist loadgroup` (`make test`), the tests that are not marked
    slow keep one worker and their order, as in a plain run; each module of slow fault
    scenarios (its own PostgreSQL server, broker nodes and ports, mostly waiting out outages)
    runs beside them in another worker. Without xdist the marks change nothing."""
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        group = item.nodeid.split("::", 1)[0] if slow else "in-order"
        item.add_marker(pytest.mark.xdist_group(group))


@dataclass(frozen=True)
class ServiceUrls:
    database_server: str  # any database on the server; tests swap the name
    amqp: str


@pytest.fixture(scope="session")
def service_urls() -> Iterator[ServiceUrls]:
    with contextlib.ExitStack() as stack:
        database = os.environ.get("BATCHOPS_TEST_DATABASE_URL")
        if database is None:
            if reachable("127.0.0.1", 5432):
                database = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
            else:
                from testcontainers.postgres import PostgresContainer

                postgres = stack.enter_context(PostgresContainer("postgres:16-alpine"))
                database = postgres.get_connection_url(driver="asyncpg")
        amqp = os.environ.get("BATCHOPS_TEST_AMQP_URL")
        if amqp is None:
            if reachable("127.0.0.1", 5672):
                amqp = "amqp://guest:guest@127.0.0.1:5672/"
            else:
                from testcontainers.rabbitmq import RabbitMqContainer

                rabbit = stack.enter_context(RabbitMqContainer("rabbitmq:3.13-management"))
                amqp = (
                    f"amqp://guest:guest@{rabbit.get_container_host_ip()}:"
                    f"{rabbit.get_exposed_port(5672)}/"
                )
        yield ServiceUrls(database, amqp)


@pytest.fixture(scope="session")
def template_database(service_urls: ServiceUrls) -> Iterator[str]:
    """A migrated, empty database that each test's database is cloned from."""
    name = f"batchops_tmpl_{uuid.uuid4().hex[:10]}"
    url = make_url(service_urls.database_server).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    asyncio.run(create_database_if_missing(rendered))
    upgrade_database(rendered)
    yield name
    asyncio.run(run_admin_sql(rendered, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(service_urls: ServiceUrls, template_database: str) -> AsyncIterator[str]:
    """A fresh database holding the demo marketplace (docs/contract.md) with 30 orders."""
    name = f"batchops_test_{uuid.uuid4().hex[:12]}"
    server = service_urls.database_server
    await run_admin_sql(server, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await seed(conn, order_count=30)
    finally:
        await engine.dispose()
    yield url
    await run_admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def namespace(service_urls: ServiceUrls) -> AsyncIterator[str]:
    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns
    connection = await aio_pika.connect_robust(service_urls.amqp)
    try:
        channel = await connection.channel()
        for queue in (f"{ns}.requests", f"{ns}.dead", f"{ns}.dead.reconcile"):
            await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in (f"{ns}.requests", f"{ns}.results", f"{ns}.dlx"):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pooler(service_urls: ServiceUrls) -> Iterator[PgBouncer | None]:
    """The PgBouncer between the service and its database, when BATCHOPS_TEST_PGBOUNCER=1."""
    if os.environ.get("BATCHOPS_TEST_PGBOUNCER") != "1":
        yield None
        return
    user = make_url(service_urls.database_server).username or "postgres"
    with PgBouncer(service_urls.database_server, users=[user]) as bouncer:
        yield bouncer


@pytest.fixture
def service_database_url(database_url: str, pooler: PgBouncer | None) -> str:
    """The test's database as the service under test reaches it."""
    return database_url if pooler is None else pooler.url(database_url)


@pytest.fixture
def settings(service_urls: ServiceUrls, service_database_url: str, namespace: str) -> Settings:
    return Settings(
        amqp_url=service_urls.amqp,
        database_url=service_database_url,
        namespace=namespace,
        relay_poll_seconds=0.05,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
        db_retry_seconds=1,
        shutdown_timeout_seconds=10,
        db_pool_size=4,
    )


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[EventLog]:
    """Every event of the test's namespace; declare the topology first so the exchange exists."""
    from publisher import BatchPublisher

    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace):
        pass
    async with listen(settings.amqp_url, settings.topology.results_exchange) as log:
        yield log


@pytest.fixture
async def service(settings: Settings, events: EventLog) -> AsyncIterator[Service]:
    """batchops running in-process (consumer + relay) until the test ends."""
    svc = bootstrap(settings)
    task = asyncio.create_task(svc.run())
    started = asyncio.create_task(svc.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # start-up failed: raise its error here
    assert started in done, "the service did not start within 20s"
    yield svc
    svc.stop()
    await asyncio.wait_for(task, 30)
