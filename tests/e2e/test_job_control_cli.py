"""Job control from the console script against the real services: `batchops cancel BATCH_ID`,
`batchops retry BATCH_ID [--wait]` and `batchops publish FILE --dry-run`, with `batchops consume`
running as a process of its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.config import Settings
from contracts import BatchRequest
from publisher import BatchPublisher
from tests.e2e.conftest import ServeProcess, run_cli
from tests.faults.broker import QueueProbe
from tests.faults.database import ScenarioDatabase
from tests.integration.helpers import batch, batch_row, patch
from tests.support import EventLog

LOCK_ORDER = "SELECT 1 FROM orders WHERE id = :order_id FOR UPDATE"
# User 6 is the professional of orders 3, 6, 9, …; order 9 is pending, so `completed` is 409.
PARTIAL = (patch(3, status="accepted"), patch(9, status="completed"), patch(6, notes="kept"))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[ScenarioDatabase]:
    database = ScenarioDatabase(settings.database_url)
    yield database
    await database.dispose()


async def consumer_running(serve: Callable[..., ServeProcess]) -> ServeProcess:
    process = serve("consume")
    await process.wait_until_ready()
    return process


async def publish(settings: Settings, body: dict[str, Any]) -> uuid.UUID:
    request = BatchRequest.model_validate(body)
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await publisher.publish(request)
    return request.batch_id


async def stored(settings: Settings, batch_id: object) -> dict[str, Any]:
    row = await batch_row(settings.database_url, batch_id)
    assert row is not None, f"batch {batch_id} is not on record"
    return dict(row._mapping)


def outcomes(completion: Any) -> list[str]:
    return [
        "cancelled"
        if r.error is not None
        and r.error.code.value == "SKIPPED"
        and "cancelled" in r.error.message
        else r.outcome.value
        for r in completion.results
    ]


class TestCancelCommand:
    async def test_an_unseen_batch_is_cancelled_in_advance_and_its_request_runs_nothing(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        db: ScenarioDatabase,
    ) -> None:
        body = batch(6, patch(3, status="accepted"), patch(6, notes="never"))

        result = run_cli(cli_env, "cancel", body["batch_id"])

        assert result.returncode == 0, result.stderr
        assert f"batch {body['batch_id']}: cancel requested" in result.stdout
        await consumer_running(serve)
        batch_id = await publish(settings, body)
        completion = await events.completion(batch_id)
        assert completion.status.value == "cancelled"
        assert outcomes(completion) == ["cancelled", "cancelled"]
        assert ("batch.order_update.cancelled", completion) in events.received
        rows = await db.rows("SELECT status, notes FROM orders WHERE id IN (3, 6) ORDER BY id")
        assert [tuple(r) for r in rows] == [("pending", ""), ("pending", "")]

    async def test_a_running_batch_stops_before_its_next_operation(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        db: ScenarioDatabase,
    ) -> None:
        await consumer_running(serve)
        body = batch(6, patch(3, notes="a"), patch(6, notes="b"), patch(9, notes="c"))
        async with db.holding(LOCK_ORDER, order_id=6) as lock:
            batch_id = await publish(settings, body)
            await db.wait_for_results(batch_id, 1)
            await db.wait_until_blocked(lock)

            result = run_cli(cli_env, "cancel", str(batch_id))

            assert result.returncode == 0, result.stderr
        completion = await events.completion(batch_id)
        assert completion.status.value == "cancelled"
        assert outcomes(completion) == ["succeeded", "cancelled", "cancelled"]
        notes = await db.rows("SELECT notes FROM orders WHERE id IN (3, 6, 9) ORDER BY id")
        assert [n for (n,) in notes] == ["a", "", ""]

    async def test_a_finished_batch_exits_1_and_nothing_changes(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        batch_id = await publish(settings, batch(6, *PARTIAL))
        await events.completion(batch_id)
        before = await stored(settings, batch_id)

        result = run_cli(cli_env, "cancel", str(batch_id))

        assert result.returncode == 1
        assert "already finished" in result.stderr
        assert "Traceback" not in result.stderr
        assert await stored(settings, batch_id) == before

    def test_a_malformed_id_exits_2(self, cli_env: dict[str, str]) -> None:
        result = run_cli(cli_env, "cancel", "not-a-batch")

        assert result.returncode == 2
        assert "BATCH_ID" in result.stderr


class TestRetryCommand:
    async def test_retry_wait_publishes_what_did_not_succeed_and_prints_its_completion(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        original = await publish(settings, batch(6, *PARTIAL, patch(12, status="in_progress")))
        await events.completion(original)

        result = run_cli(cli_env, "retry", str(original), "--wait", "--timeout", "30")

        assert result.returncode == 0, result.stderr
        arrived = await events.wait_for(
            lambda received: any(getattr(e, "retry_of", None) == original for _, e in received)
        )
        new_id = next(e for _, e in arrived if getattr(e, "retry_of", None) == original).batch_id
        assert new_id != original
        completion = await events.completion(new_id)
        assert [(r.index, r.resource_id) for r in completion.results] == [(0, 9), (1, 12)]
        assert completion.retry_of == original
        assert f"batch {new_id} (order_update): FAILED" in result.stdout
        assert (await stored(settings, new_id))["retry_of"] == original

    async def test_retry_without_wait_only_publishes_the_new_batch(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
    ) -> None:
        process = await consumer_running(serve)
        original = await publish(settings, batch(6, *PARTIAL))
        await events.completion(original)
        process.kill()  # nothing runs the retry

        result = run_cli(cli_env, "retry", str(original))

        assert result.returncode == 0, result.stderr
        assert "a retry of 1 operations" in result.stdout
        new_id = uuid.UUID(result.stdout.split()[2].rstrip(":"))
        assert await batch_row(settings.database_url, new_id) is None, "published, not run yet"

    @pytest.mark.parametrize("kind", ["completed", "dry run", "unseen"])
    async def test_a_batch_that_cannot_be_retried_exits_1_and_nothing_is_published(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        kind: str,
    ) -> None:
        process = await consumer_running(serve)
        if kind == "unseen":
            batch_id = uuid.uuid4()
        else:
            body = batch(6, patch(3, notes="x"), dry_run=kind == "dry run")
            batch_id = await publish(settings, body)
            await events.completion(batch_id)
        process.kill()  # a retry published now would stay in the work queue

        result = run_cli(cli_env, "retry", str(batch_id))

        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith("batchops: retry: "), result.stderr
        assert "Traceback" not in result.stderr
        depth = await QueueProbe(settings.amqp_url).depth(settings.topology.requests_queue)
        assert depth.ready == 0, "a refused retry publishes nothing"


class TestPublishDryRun:
    async def test_publish_dry_run_rehearses_the_file_and_changes_nothing(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        db: ScenarioDatabase,
        tmp_path: Path,
    ) -> None:
        await consumer_running(serve)
        body = batch(6, *PARTIAL)
        request = tmp_path / "request.json"
        request.write_text(json.dumps(body), encoding="utf-8")
        before = await db.rows("SELECT t::text FROM orders t ORDER BY id")

        result = run_cli(cli_env, "publish", str(request), "--dry-run", "--wait", "--timeout", "20")

        assert result.returncode == 0, result.stderr
        batch_id = uuid.UUID(body["batch_id"])
        completion = await events.completion(batch_id)
        assert completion.dry_run
        assert [k for k, e in events.received if getattr(e, "batch_id", None) == batch_id] == [
            "dryrun.order_update.partial"
        ]
        assert await db.rows("SELECT t::text FROM orders t ORDER BY id") == before
        assert (await stored(settings, batch_id))["dry_run"] is True
        assert "PARTIAL" in result.stdout

    async def test_publish_dry_run_rehearses_every_line_of_a_json_lines_file(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        db: ScenarioDatabase,
        tmp_path: Path,
    ) -> None:
        await consumer_running(serve)
        bodies = [batch(6, patch(3, status="accepted")), batch(7, patch(1, notes="gate"))]
        lines = tmp_path / "requests.jsonl"
        lines.write_text("\n".join(json.dumps(b) for b in bodies) + "\n", encoding="utf-8")
        before = await db.rows("SELECT t::text FROM orders t ORDER BY id")

        result = run_cli(cli_env, "publish", str(lines), "--dry-run", "--wait", "--timeout", "20")

        assert result.returncode == 0, result.stderr
        for body in bodies:
            completion = await events.completion(uuid.UUID(body["batch_id"]))
            assert (completion.dry_run, completion.status.value) == (True, "completed")
        assert {k.split(".")[0] for k in events.routing_keys()} == {"dryrun"}
        assert await db.rows("SELECT t::text FROM orders t ORDER BY id") == before
