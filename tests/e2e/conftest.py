"""The `batchops` console script run as a separate process against the test's services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.config import Settings
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


class ServeProcess:
    """`batchops serve` in the background; its stderr (JSON log lines) is collected."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str = "serve") -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [BATCHOPS, command], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
async def serve(
    cli_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(command: str = "serve", http_port: int = 0) -> ServeProcess:
        # Port 0 for a process that must not listen; tests that call HTTP pass a free port.
        env = {**cli_env, "BATCHOPS_HTTP_PORT": str(http_port)}
        process = ServeProcess(env, tmp_path / f"{command}-{len(started)}.log", command)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


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
