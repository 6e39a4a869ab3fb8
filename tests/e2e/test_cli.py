"""The console script end to end: database set-up, serving, publishing, shutting down."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from consumer.adapters.tables import orders, users
from consumer.config import Settings
from contracts import BatchStatus
from tests.e2e.conftest import ServeProcess, order_locked, run_cli, wait_for_results
from tests.integration.helpers import batch, fetch, order, patch, result_rows
from tests.support import EventLog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_update.json"


class TestDatabaseCommands:
    def test_db_upgrade_creates_a_missing_database_and_seed_loads_the_marketplace(
        self, fresh_database_env: dict[str, str]
    ) -> None:
        upgraded = run_cli(fresh_database_env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert "created" in upgraded.stdout

        again = run_cli(fresh_database_env, "db", "upgrade")
        assert again.returncode == 0, again.stderr
        assert "created" not in again.stdout

        seeded = run_cli(fresh_database_env, "seed", "--orders", "7")
        assert seeded.returncode == 0, seeded.stderr

    def test_seed_refuses_a_database_that_already_has_data(self, cli_env: dict[str, str]) -> None:
        result = run_cli(cli_env, "seed")
        assert result.returncode == 1
        assert "already has users" in result.stderr

    async def test_the_seeded_marketplace_is_exactly_the_one_documented(
        self, settings: Settings
    ) -> None:
        roles = await fetch(
            settings.database_url, select(users.c.id, users.c.role).order_by(users.c.id)
        )
        assert [role for _, role in roles] == [
            "admin",
            "staff",
            "client",
            "client",
            "client",
            "professional",
            "professional",
            "professional",
        ]
        rows = await fetch(
            settings.database_url,
            select(orders.c.id, orders.c.client_id, orders.c.professional_id, orders.c.service_id)
            .where(orders.c.id.in_([1, 2, 3]))
            .order_by(orders.c.id),
        )
        assert [tuple(r) for r in rows] == [(1, 4, 2, 3), (2, 5, 3, 5), (3, 3, 1, 1)]
        total = await fetch(settings.database_url, select(func.count()).select_from(orders))
        assert total[0][0] == 30


class TestServeAndPublish:
    async def test_serve_runs_a_published_file_and_exits_zero_on_sigterm(
        self, cli_env: dict[str, str], serve: Callable[[], ServeProcess]
    ) -> None:
        service = serve()
        await service.wait_until_ready()

        published = run_cli(cli_env, "publish", str(EXAMPLE), "--wait", "--timeout", "30")

        assert published.returncode == 0, published.stderr
        assert "PARTIAL" in published.stdout
        assert "success rate 66.67%" in published.stdout
        assert "CONFLICT" in published.stdout
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=20) == 0

    def test_publish_explains_an_invalid_file_and_exits_2(
        self, cli_env: dict[str, str], tmp_path: Path
    ) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"operation_type": "order_update", "operations": []}))

        result = run_cli(cli_env, "publish", str(bad))

        assert result.returncode == 2
        assert "actor_id" in result.stderr
        assert "operations" in result.stderr

    def test_publish_refuses_more_operations_than_batchops_max_operations(
        self, cli_env: dict[str, str], tmp_path: Path
    ) -> None:
        two = tmp_path / "two.json"
        two.write_text(json.dumps(batch(6, patch(3, notes="a"), patch(6, notes="b"))))
        lines = tmp_path / "two.jsonl"
        lines.write_text(two.read_text() + "\n")
        env = {**cli_env, "BATCHOPS_MAX_OPERATIONS": "1"}

        for path in (two, lines):
            result = run_cli(env, "publish", str(path))
            assert result.returncode == 2, (path.name, result.stdout, result.stderr)
            assert "BATCHOPS_MAX_OPERATIONS" in result.stderr


class TestCrashRecovery:
    async def test_a_consumer_killed_mid_batch_is_resumed_by_the_next_without_double_effects(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[[], ServeProcess],
        events: EventLog,
        tmp_path: Path,
    ) -> None:
        body = batch(
            6, patch(3, status="accepted"), patch(6, status="accepted"), patch(9, notes="n")
        )
        batch_id = uuid.UUID(body["batch_id"])
        request_file = tmp_path / "batch.json"
        request_file.write_text(json.dumps(body))
        first = serve()
        await first.wait_until_ready()

        # Hold order 6 so that the consumer commits operation 0 and then blocks on operation 1.
        async with order_locked(settings.database_url, 6):
            assert run_cli(cli_env, "publish", str(request_file)).returncode == 0
            await wait_for_results(settings.database_url, batch_id, 1)
            first.process.kill()  # SIGKILL: no chance to clean up
            first.process.wait(10)

        second = serve()
        completion = await events.completion(batch_id, timeout=30)

        assert completion.status is BatchStatus.COMPLETED, completion.results
        rows = await result_rows(settings.database_url, batch_id)
        assert [(r.index, r.outcome) for r in rows] == [
            (0, "succeeded"),
            (1, "succeeded"),
            (2, "succeeded"),
        ]
        assert (await order(settings.database_url, 3)).status == "accepted"
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=20) == 0
