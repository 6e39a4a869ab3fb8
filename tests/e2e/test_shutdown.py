"""Graceful shutdown: SIGTERM stops intake, finishes the operation in hand, leaves
the rest of the batch to redelivery, flushes the relay and exits 0 within the bound."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from consumer.config import Settings
from contracts import BatchStatus
from tests.e2e.conftest import ServeProcess, order_locked, run_cli, wait_for_results
from tests.integration.helpers import (
    batch,
    batch_row,
    eventually,
    order,
    patch,
    result_rows,
    unsent_events,
)
from tests.support import EventLog


async def exit_code_within(process: ServeProcess, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    code = await asyncio.to_thread(process.process.wait, seconds)
    return code, time.monotonic() - started


class TestGracefulShutdown:
    async def test_sigterm_finishes_the_operation_in_hand_and_leaves_the_rest_to_redelivery(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        tmp_path: Path,
    ) -> None:
        body = batch(
            6, patch(3, status="accepted"), patch(6, status="accepted"), patch(9, notes="n")
        )
        batch_id = uuid.UUID(body["batch_id"])
        request = tmp_path / "batch.json"
        request.write_text(json.dumps(body))
        first = serve()
        await first.wait_until_ready()
        # Operation 1 waits on this lock: it is the operation in hand at SIGTERM.
        async with order_locked(settings.database_url, 6):
            assert run_cli(cli_env, "publish", str(request)).returncode == 0
            await wait_for_results(settings.database_url, batch_id, 1)
            first.process.send_signal(signal.SIGTERM)
            await first.wait_for_log('"consumer_stopping"')

        code, _ = await exit_code_within(first, 20)
        assert code == 0, first.log()
        rows = await result_rows(settings.database_url, batch_id)
        assert [r.index for r in rows] == [0, 1], "the operation in hand finishes, the rest waits"
        assert "batch_left_for_redelivery" in first.log()
        assert await unsent_events(settings.database_url) == 0, "the relay flushes before exit"

        serve()
        completion = await events.completion(batch_id, timeout=30)
        assert completion.status is BatchStatus.COMPLETED
        assert (await order(settings.database_url, 6)).status == "accepted"

    async def test_shutdown_is_bounded_even_when_the_operation_in_hand_cannot_finish(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        tmp_path: Path,
    ) -> None:
        body = batch(6, patch(3, notes="blocked"))
        request = tmp_path / "batch.json"
        request.write_text(json.dumps(body))
        cli_env["BATCHOPS_SHUTDOWN_TIMEOUT_SECONDS"] = "2"
        service = serve()
        await service.wait_until_ready()
        async with order_locked(settings.database_url, 3):
            assert run_cli(cli_env, "publish", str(request)).returncode == 0

            async def claimed() -> bool:
                return await batch_row(settings.database_url, body["batch_id"]) is not None

            await eventually(claimed, what="the batch claimed by the consumer")
            service.process.send_signal(signal.SIGTERM)
            code, took = await exit_code_within(service, 20)
        assert code == 0, service.log()
        assert took < 10, f"shutdown took {took:.1f}s with a 2s bound"
        assert (await order(settings.database_url, 3)).notes == ""
