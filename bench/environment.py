"""The benchmark's own world: a dropped-and-recreated database and a unique broker namespace."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import aio_pika
import yarl
from sqlalchemy import URL, make_url, text

from bench.history import FILL
from consumer.adapters.database import create_engine, upgrade
from consumer.adapters.seed import seed
from contracts import Topology

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The bench drops its database: refuse any name that could be somebody's real data.
DATABASE_PREFIX = "batchops_bench"


class BenchSetupError(Exception):
    """The benchmark refuses to run with these targets."""


def require_local(database_url: str, amqp_url: str) -> None:
    """Only local servers: the bench drops a database and floods a broker."""
    db_host = make_url(database_url).host or "localhost"
    amqp_host = yarl.URL(amqp_url).host or "localhost"
    for what, host in (("database", db_host), ("broker", amqp_host)):
        if host not in LOCAL_HOSTS:
            raise BenchSetupError(f"the {what} host {host!r} is not local; the bench runs locally")


def bench_url(server_url: str, database: str) -> URL:
    if not database.startswith(DATABASE_PREFIX):
        raise BenchSetupError(f"--database must start with {DATABASE_PREFIX!r} (it is dropped)")
    return make_url(server_url).set(database=database)


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def execute_admin(url: URL, statement: str) -> None:
    engine = create_engine(render(url.set(database="postgres")), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(url: URL, order_count: int, history: int = 0) -> str:
    """Drop and re-create the database, migrate it, seed `order_count` orders and `history`
    finished batches (to show the cost per operation does not grow with them); returns the
    server's version."""
    await drop_database(url)
    await upgrade(render(url))
    engine = create_engine(render(url), pool_size=1)
    try:
        async with engine.begin() as conn:
            await seed(conn, order_count=order_count)
            if history:
                await conn.execute(text(FILL), {"actors": 1000, "batches": history})
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # Fresh statistics so that every phase gets the same (index) plans.
            await conn.execute(text("VACUUM ANALYZE"))
            return str(await conn.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


async def drop_database(url: URL) -> None:
    await execute_admin(url, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


async def checkpoint(url: URL) -> None:
    """Start each timed phase from a clean checkpoint (fewer full-page writes carried over)."""
    await execute_admin(url, "CHECKPOINT")


def new_namespace() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


async def delete_namespace(amqp_url: str, namespace: str) -> None:
    """Remove every queue and exchange of docs/contract.md for `namespace` (those that exist)."""
    topology = Topology(namespace)
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        for queue in (
            topology.requests_queue,
            topology.dead_letter_queue,
            topology.dead_letter_reconcile_queue,
        ):
            # Quorum queues refuse if_unused/if_empty deletes; a fresh channel per call because
            # the broker closes the channel on any error.
            async with connection.channel() as channel:
                await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in (
            topology.requests_exchange,
            topology.results_exchange,
            topology.dead_letter_exchange,
        ):
            async with connection.channel() as channel:
                await channel.exchange_delete(exchange, if_unused=False)
    finally:
        await connection.close()


class OrderIds:
    """Hands out consecutive blocks of seeded order ids: every operation of the run touches an
    order no other operation touched, so each one succeeds (pending → accepted) and no two
    phases contend for a row."""

    def __init__(self, first: int = 1) -> None:
        self._next = first

    def take(self, count: int) -> list[int]:
        block = list(range(self._next, self._next + count))
        self._next += count
        return block

    @property
    def used(self) -> int:
        return self._next - 1


def code_version() -> str:
    """The commit measured, with `+modified` when product code differs from it: figures are
    only comparable between runs of the same code."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    modified = git("status", "--porcelain", "--", "consumer", "publisher", "contracts")
    return f"{commit}+modified" if modified else commit
