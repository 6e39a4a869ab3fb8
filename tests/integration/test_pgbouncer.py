"""batchops behind PgBouncer in transaction pooling mode, against the real PostgreSQL.

Transaction pooling hands each transaction to whichever server connection is free, so a
prepared statement kept by one client meets another client's on the same server connection.
`?prepared_statement_cache_size=0` in BATCHOPS_DATABASE_URL turns that off (statements.py);
here PgBouncer has fewer server connections than batchops has clients, so every batch and query
shares them. `make pgbouncer-test` runs the whole integration suite through a PgBouncer too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url, text

from consumer.adapters.database import create_engine
from consumer.adapters.statements import statement_cache_size
from consumer.bootstrap import bootstrap
from consumer.config import Settings
from contracts import BatchRequest, BatchStatus
from publisher import BatchPublisher
from tests.conftest import ServiceUrls
from tests.integration.helpers import batch, patch
from tests.pgbouncer import PgBouncer
from tests.support import EventLog

SERVER_CONNECTIONS = 2


@pytest.fixture(scope="module")
def bouncer(service_urls: ServiceUrls) -> Iterator[PgBouncer]:
    user = make_url(service_urls.database_server).username or "postgres"
    with PgBouncer(
        service_urls.database_server, users=[user], pool_size=SERVER_CONNECTIONS
    ) as running:
        yield running


def asyncpg_dsn(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    return {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "database": parsed.database,
    }


class TestPreparedStatementsBehindTransactionPooling:
    async def test_a_cached_prepared_statement_is_missing_on_another_server_connection(
        self, bouncer: PgBouncer, database_url: str
    ) -> None:
        # The control, which shows why the switch exists: asyncpg's own cache on (its default),
        # a statement prepared on one server connection is run again while another client's
        # transaction holds that connection.
        dsn = asyncpg_dsn(bouncer.url(database_url))
        caching = await asyncpg.connect(**dsn, statement_cache_size=100)
        holder = await asyncpg.connect(**dsn, statement_cache_size=0)
        try:
            assert await caching.fetchval("SELECT $1::int", 1) == 1
            await holder.execute("BEGIN")  # takes the one idle server connection, and keeps it
            with pytest.raises(asyncpg.PostgresError, match="does not exist"):
                await caching.fetchval("SELECT $1::int", 2)
        finally:
            await holder.close()
            await caching.close()

    async def test_with_the_switch_no_statement_outlives_its_transaction(
        self, bouncer: PgBouncer, database_url: str
    ) -> None:
        url = bouncer.url(database_url)
        assert statement_cache_size(url) == 0
        dsn = asyncpg_dsn(url)
        clients = [
            await asyncpg.connect(**dsn, statement_cache_size=statement_cache_size(url))
            for _ in range(SERVER_CONNECTIONS * 2)
        ]
        try:
            for round_ in range(3):
                answers = await asyncio.gather(
                    *(c.fetchval("SELECT $1::int", n + round_) for n, c in enumerate(clients))
                )
                assert answers == [n + round_ for n in range(len(clients))]
        finally:
            for client in clients:
                await client.close()


class TestTheServiceBehindTransactionPooling:
    async def test_batches_and_api_queries_share_fewer_server_connections_than_clients(
        self, bouncer: PgBouncer, database_url: str, settings: Settings, events: EventLog
    ) -> None:
        pooled = settings.model_copy(update={"database_url": bouncer.url(database_url)})
        requests = [
            BatchRequest.model_validate(
                batch(
                    1, patch(order, notes=f"through pgbouncer {order}"), patch(order, price="1.50")
                )
            )
            for order in range(1, 21)
        ]
        service = bootstrap(pooled)
        task = asyncio.create_task(service.run())
        engine = create_engine(pooled.database_url, pool_size=4)
        try:
            async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
                await asyncio.gather(*(publisher.publish(r) for r in requests))

            async def count_finished() -> int:
                async with engine.connect() as conn:
                    found = await conn.scalar(
                        text("SELECT count(*) FROM batch_operations WHERE status = 'completed'")
                    )
                return int(found or 0)

            completions = [await events.completion(r.batch_id, timeout=30) for r in requests]
            assert await count_finished() == len(requests)
        finally:
            service.stop()
            await asyncio.wait_for(task, 30)
            await engine.dispose()
        assert {c.status for c in completions} == {BatchStatus.COMPLETED}
        assert json.loads(completions[0].model_dump_json())["completed_operations"] == 2
