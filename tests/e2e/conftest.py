"""The `batchops` console script run as a separate process against the test's services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.config import Settings
from tests.faults.processes import ConsumerProcess, Consumers
from tests.integration.helpers import eventually, result_rows

BATCHOPS = str(Path(sys.executable).with_name("batchops"))


@contextlib.asynccontextmanager
async def order_locked(database_url: str, order_id: int) -> AsyncIterator[None]:
    """Hold an order's row lock: a consumer reaching that order waits until the block ends."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as blocker:
            await blocker.execute(
                text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
            )
            try:
                yield
            finally:
                await blocker.rollback()
    finally:
        await engine.dispose()


async def wait_for_results(database_url: str, batch_id: uuid.UUID, count: int) -> None:
    async def committed() -> bool:
        return len(await result_rows(database_url, batch_id)) == count

    await eventually(committed, what=f"{count} operation(s) of the batch committed")


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "BATCHOPS_DATABASE_URL": settings.database_url,
        "BATCHOPS_AMQP_URL": settings.amqp_url,
        "BATCHOPS_NAMESPACE": settings.namespace,
        "BATCHOPS_LOG_FORMAT": "json",
        "BATCHOPS_RELAY_POLL_SECONDS": "0.05",
    }


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BATCHOPS, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# `batchops serve` (or `consume`) in the background, its output (JSON log lines) in a file, its
# probes on a port of its own: the fault suite's process, with `readiness()` and
# `wait_until_ready()`.
ServeProcess = ConsumerProcess


@pytest.fixture
async def serve(
    cli_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[..., ServeProcess]]:
    """Start `batchops serve` (the whole HTTP API on `process.probe_port`) or `consume` (its
    /healthz, /readyz and /metrics there), with `cli_env` as it is then plus `env`; not waited
    for (`await process.wait_until_ready()`), killed at the end."""
    processes = Consumers(cli_env, tmp_path)

    def start(command: str = "serve", **env: str) -> ServeProcess:
        return processes.spawn_probed(command, **env)

    yield start
    processes.close()


@pytest.fixture
def fresh_database_env(cli_env: dict[str, str], settings: Settings) -> Iterator[dict[str, str]]:
    """Environment naming a database that does not exist yet (dropped afterwards)."""
    from sqlalchemy import make_url

    from tests.support import run_admin_sql

    url = make_url(settings.database_url)
    fresh = url.set(database=f"{url.database}_fresh")
    yield {**cli_env, "BATCHOPS_DATABASE_URL": fresh.render_as_string(hide_password=False)}
    asyncio.run(
        run_admin_sql(
            settings.database_url, f'DROP DATABASE IF EXISTS "{fresh.database}" WITH (FORCE)'
        )
    )
