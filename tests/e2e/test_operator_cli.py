"""Operator commands of the console script against the real services: batches show/list,
dead-letters list/replay, cleanup, publishing JSON lines, and clear failures when a service is
unreachable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from consumer.config import Settings
from contracts import BatchRejected, BatchStatus, Event
from contracts.asyncapi import COMMITTED_ASYNCAPI
from contracts.schema import SCHEMA_MODELS
from tests.e2e.conftest import BATCHOPS, ServeProcess, run_cli
from tests.integration.helpers import batch, eventually, order, patch, publish_raw, result_rows
from tests.support import EventLog

# Three batches of different outcomes and actors (the demo marketplace of docs/contract.md:
# user 6 is the professional of orders 3 and 9, user 7 of order 1; order 9 is pending, so
# `completed` is 409).
ACCEPT = batch(6, patch(3, status="accepted"))
CONFLICT = batch(6, patch(9, status="completed"))
NOTES = batch(7, patch(1, notes="gate code 1234"))


def write_lines(path: Path, *bodies: dict[str, Any] | str) -> Path:
    path.write_text(
        "\n".join(b if isinstance(b, str) else json.dumps(b) for b in bodies) + "\n",
        encoding="utf-8",
    )
    return path


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in `queue` (passively: the queue is never created here)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def has_depth(settings: Settings, queue: str, expected: int) -> None:
    async def probe() -> bool:
        return await queue_depth(settings.amqp_url, queue) == expected

    await eventually(probe, timeout=15, what=f"{queue} holding {expected} messages")


def rejections_of(events: list[tuple[str, Event]], batch_id: str) -> list[BatchRejected]:
    return [e for _, e in events if isinstance(e, BatchRejected) and str(e.batch_id) == batch_id]


async def consumer_running(serve: Callable[..., ServeProcess]) -> ServeProcess:
    process = serve("consume")
    await process.wait_until_ready()
    return process


class TestPublishJsonLines:
    async def test_a_json_lines_file_publishes_every_batch_with_progress_and_waits_for_each(
        self,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        tmp_path: Path,
    ) -> None:
        await consumer_running(serve)
        requests = write_lines(tmp_path / "batches.jsonl", ACCEPT, CONFLICT, "", NOTES)

        result = run_cli(cli_env, "publish", str(requests), "--wait", "--timeout", "30")

        assert result.returncode == 0, result.stderr
        assert "published 3/3" in result.stderr
        assert "finished 3/3" in result.stderr
        assert f"line 1: batch {ACCEPT['batch_id']} (order_update): COMPLETED" in result.stdout
        assert f"line 2: batch {CONFLICT['batch_id']} (order_update): FAILED" in result.stdout
        assert f"line 4: batch {NOTES['batch_id']} (order_update): COMPLETED" in result.stdout
        assert "3 of 3 batches finished: 2 completed, 1 failed" in result.stdout
        for body in (ACCEPT, CONFLICT, NOTES):
            await events.completion(uuid.UUID(body["batch_id"]))

    async def test_invalid_lines_are_reported_by_number_and_nothing_is_published(
        self, settings: Settings, cli_env: dict[str, str], events: EventLog, tmp_path: Path
    ) -> None:
        bad_actor = {**ACCEPT, "actor_id": "six"}
        requests = write_lines(
            tmp_path / "batches.jsonl", NOTES, "{not json", bad_actor, "[1, 2]", NOTES
        )

        result = run_cli(cli_env, "publish", str(requests))

        assert result.returncode == 2
        assert "4 invalid lines; nothing was published" in result.stderr
        assert "line 2: not JSON" in result.stderr
        assert "line 3: actor_id" in result.stderr
        assert "line 4: not a JSON object" in result.stderr
        assert "line 5: batch_id: also on line 1" in result.stderr
        assert "line 1:" not in result.stderr
        assert await queue_depth(settings.amqp_url, settings.topology.requests_queue) == 0

    async def test_json_lines_are_read_from_stdin_with_a_dash(
        self, settings: Settings, cli_env: dict[str, str], events: EventLog
    ) -> None:
        lines = "\n".join(json.dumps(body) for body in (batch(6, patch(3)), batch(7, patch(1))))

        process = await asyncio.create_subprocess_exec(
            BATCHOPS,
            "publish",
            "-",
            env=cli_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(lines.encode()), 60)

        assert process.returncode == 0, stderr.decode()
        assert "published 2 batches (2 operations)" in stdout.decode()
        assert await queue_depth(settings.amqp_url, settings.topology.requests_queue) == 2

    def test_a_single_json_request_still_publishes_as_before(
        self, cli_env: dict[str, str], tmp_path: Path
    ) -> None:
        request = tmp_path / "one.json"
        request.write_text(json.dumps(ACCEPT, indent=2), encoding="utf-8")

        result = run_cli(cli_env, "publish", str(request))

        assert result.returncode == 0, result.stderr
        assert f"published batch {ACCEPT['batch_id']} (1 operations)" in result.stdout


class TestBatchesCommands:
    async def test_show_prints_the_summary_and_every_result_as_text_or_json(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        tmp_path: Path,
    ) -> None:
        await consumer_running(serve)
        body = batch(6, patch(3, status="accepted"), patch(9, status="completed"))
        published = run_cli(
            cli_env, "publish", str(write_lines(tmp_path / "b.json", body)), "--wait"
        )
        assert published.returncode == 0, published.stderr

        shown = run_cli(cli_env, "batches", "show", body["batch_id"])
        as_json = run_cli(cli_env, "batches", "show", body["batch_id"], "--json")

        assert shown.returncode == 0, shown.stderr
        assert f"batch {body['batch_id']}" in shown.stdout
        assert "PARTIAL" in shown.stdout
        assert "2: 1 succeeded, 1 failed, 0 skipped" in shown.stdout
        assert "success rate 50.00%" in shown.stdout
        assert "CONFLICT" in shown.stdout
        detail = json.loads(as_json.stdout)
        assert detail["status"] == BatchStatus.PARTIAL
        assert detail["success_rate"] == 50.0
        assert detail["progress"] == 100.0
        assert [r["outcome"] for r in detail["results"]] == ["succeeded", "failed"]
        assert detail["results"][1]["error"]["code"] == "CONFLICT"

    def test_show_of_an_unknown_batch_exits_1_and_of_a_malformed_id_exits_2(
        self, cli_env: dict[str, str]
    ) -> None:
        unknown = run_cli(cli_env, "batches", "show", str(uuid.uuid4()))
        malformed = run_cli(cli_env, "batches", "show", "not-a-uuid")

        assert unknown.returncode == 1
        assert "no batch" in unknown.stderr
        assert malformed.returncode == 2
        assert "invalid UUID value" in malformed.stderr

    async def test_list_shows_a_table_filtered_by_status_type_and_actor(
        self, cli_env: dict[str, str], serve: Callable[..., ServeProcess], tmp_path: Path
    ) -> None:
        await consumer_running(serve)
        requests = write_lines(tmp_path / "batches.jsonl", ACCEPT, CONFLICT, NOTES)
        assert run_cli(cli_env, "publish", str(requests), "--wait").returncode == 0

        everything = run_cli(cli_env, "batches", "list")
        failed = run_cli(cli_env, "batches", "list", "--status", "failed")
        by_actor = run_cli(cli_env, "batches", "list", "--actor", "7", "--json")
        by_type = run_cli(cli_env, "batches", "list", "--operation-type", "user_update")
        first = run_cli(cli_env, "batches", "list", "--limit", "1")

        assert everything.returncode == 0, everything.stderr
        assert everything.stdout.splitlines()[0].split()[:4] == [
            "BATCH",
            "CREATED",
            "TYPE",
            "STATUS",
        ]
        assert all(body["batch_id"] in everything.stdout for body in (ACCEPT, CONFLICT, NOTES))
        assert "3 of 3 matching batches" in everything.stdout
        assert CONFLICT["batch_id"] in failed.stdout
        assert ACCEPT["batch_id"] not in failed.stdout
        page = json.loads(by_actor.stdout)
        assert page["count"] == 1
        assert page["results"][0]["batch_id"] == NOTES["batch_id"]
        assert by_type.stdout.strip() == "no batches match"
        assert "1 of 3 matching batches" in first.stdout

    def test_list_refuses_a_limit_below_one_and_an_unknown_status(
        self, cli_env: dict[str, str]
    ) -> None:
        assert run_cli(cli_env, "batches", "list", "--limit", "0").returncode == 2
        assert run_cli(cli_env, "batches", "list", "--status", "lost").returncode == 2


class TestCleanup:
    async def test_a_dry_run_only_counts_and_the_real_run_deletes_finished_batches(
        self, cli_env: dict[str, str], serve: Callable[..., ServeProcess], tmp_path: Path
    ) -> None:
        await consumer_running(serve)
        requests = write_lines(tmp_path / "b.jsonl", ACCEPT, NOTES)
        assert run_cli(cli_env, "publish", str(requests), "--wait").returncode == 0

        dry = run_cli(cli_env, "cleanup", "--older-than", "0", "--dry-run")
        still_there = run_cli(cli_env, "batches", "show", ACCEPT["batch_id"])
        real = run_cli(cli_env, "cleanup", "--older-than", "0")
        gone = run_cli(cli_env, "batches", "show", ACCEPT["batch_id"])

        assert dry.returncode == 0, dry.stderr
        assert "would delete 2 batches" in dry.stdout
        assert still_there.returncode == 0
        assert "deleted 2 batches" in real.stdout
        assert gone.returncode == 1


class TestDeadLetters:
    async def test_list_shows_dead_letters_without_taking_them_off_the_queue(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        invalid = batch(6)  # no operations: rejected and dead-lettered
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(invalid).encode()
        )
        await events.rejection()
        dead = settings.topology.dead_letter_queue
        await has_depth(settings, dead, 1)

        listed = run_cli(cli_env, "dead-letters", "list")
        again = run_cli(cli_env, "dead-letters", "list", "--json")

        assert listed.returncode == 0, listed.stderr
        assert invalid["batch_id"] in listed.stdout
        assert "rejected" in listed.stdout
        assert f"1 of 1 dead letters in {dead}" in listed.stdout
        letter = json.loads(again.stdout)["results"][0]
        assert letter["batch_id"] == invalid["batch_id"]
        assert letter["routing_key"] == "order_update"
        assert letter["reason"] == "rejected"
        assert await queue_depth(settings.amqp_url, dead) == 1

    def test_list_of_an_empty_queue_says_so(
        self, cli_env: dict[str, str], events: EventLog
    ) -> None:
        listed = run_cli(cli_env, "dead-letters", "list")

        assert listed.returncode == 0, listed.stderr
        assert "is empty" in listed.stdout

    async def test_a_replayed_request_that_is_still_invalid_is_refused_again_with_the_same_event(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        invalid = batch(6)
        await publish_raw(
            settings.amqp_url,
            settings.topology.requests_exchange,
            json.dumps(invalid).encode(),
            correlation_id="corr-replay",
        )
        await events.rejection()
        dead = settings.topology.dead_letter_queue
        await has_depth(settings, dead, 1)

        replayed = run_cli(cli_env, "dead-letters", "replay")

        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed #1: batch {invalid['batch_id']}" in replayed.stdout
        received = await events.wait_for(
            lambda ev: len(rejections_of(ev, invalid["batch_id"])) == 2
        )
        first, second = rejections_of(received, invalid["batch_id"])
        assert second.event_id == first.event_id
        assert second.correlation_id == "corr-replay"
        await has_depth(settings, dead, 1)
        letter = json.loads(run_cli(cli_env, "dead-letters", "list", "--json").stdout)
        assert letter["results"][0]["replays"] == 1

    async def test_a_request_replayed_after_its_cause_is_fixed_is_executed(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        tmp_path: Path,
    ) -> None:
        # Only `billing` may publish, so the CLI's batch (user guest) is refused...
        strict = serve("consume", BATCHOPS_ALLOWED_PUBLISHERS='["billing"]')
        try:
            await strict.wait_until_ready()
            request = write_lines(tmp_path / "b.json", ACCEPT)
            assert run_cli(cli_env, "publish", str(request)).returncode == 0
            _, rejection = await events.rejection()
            assert rejection.errors[0].type == "publisher_not_allowed"
            strict.process.send_signal(signal.SIGTERM)
            assert strict.process.wait(timeout=20) == 0
        finally:
            strict.close()
        await has_depth(settings, settings.topology.dead_letter_queue, 1)
        # ...until the restriction is lifted and the request replayed.
        await consumer_running(serve)

        replayed = run_cli(cli_env, "dead-letters", "replay")

        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 dead letters" in replayed.stdout
        completion = await events.completion(uuid.UUID(ACCEPT["batch_id"]), timeout=30)
        assert completion.status is BatchStatus.COMPLETED
        assert (await order(settings.database_url, 3)).status == "accepted"
        await has_depth(settings, settings.topology.dead_letter_queue, 0)

    async def test_replaying_a_batch_that_already_ran_resends_its_completion_without_rerunning(
        self,
        settings: Settings,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        events: EventLog,
        tmp_path: Path,
    ) -> None:
        await consumer_running(serve)
        request = write_lines(tmp_path / "b.json", ACCEPT)
        assert run_cli(cli_env, "publish", str(request), "--wait").returncode == 0
        # A copy of the same request lands in the dead-letter queue (as after a lost ack).
        await publish_raw(
            settings.amqp_url,
            settings.topology.dead_letter_exchange,
            json.dumps(ACCEPT).encode(),
            message_id=ACCEPT["batch_id"],
        )
        await has_depth(settings, settings.topology.dead_letter_queue, 1)

        replayed = run_cli(cli_env, "dead-letters", "replay", "--batch-id", ACCEPT["batch_id"])

        assert replayed.returncode == 0, replayed.stderr
        batch_id = uuid.UUID(ACCEPT["batch_id"])

        def completions(ev: list[tuple[str, Event]]) -> list[Event]:
            return [e for k, e in ev if k.startswith("batch.") and e.batch_id == batch_id]

        received = await events.wait_for(lambda ev: len(completions(ev)) == 2)
        first, second = completions(received)
        assert second == first  # the stored completion, same event_id: nothing ran again
        assert len(await result_rows(settings.database_url, batch_id)) == 1

    async def test_replay_with_a_batch_id_or_a_limit_leaves_the_other_dead_letters_alone(
        self, settings: Settings, cli_env: dict[str, str], events: EventLog
    ) -> None:
        # No consumer runs: replayed requests wait in the work queue where they can be counted.
        bodies = [batch(6), batch(7), batch(8)]
        for body in bodies:
            await publish_raw(
                settings.amqp_url,
                settings.topology.dead_letter_exchange,
                json.dumps(body).encode(),
                message_id=body["batch_id"],
            )
        dead, work = settings.topology.dead_letter_queue, settings.topology.requests_queue
        await has_depth(settings, dead, 3)

        by_id = run_cli(cli_env, "dead-letters", "replay", "--batch-id", bodies[1]["batch_id"])
        first_only = run_cli(cli_env, "dead-letters", "replay", "--limit", "1")
        unknown = run_cli(cli_env, "dead-letters", "replay", "--batch-id", str(uuid.uuid4()))

        assert by_id.returncode == 0, by_id.stderr
        assert bodies[1]["batch_id"] in by_id.stdout
        assert first_only.returncode == 0, first_only.stderr
        assert bodies[0]["batch_id"] in first_only.stdout
        assert unknown.returncode == 1
        assert "no dead letter of batch" in unknown.stderr
        assert await queue_depth(settings.amqp_url, work) == 2
        left = json.loads(run_cli(cli_env, "dead-letters", "list", "--json").stdout)
        assert [letter["batch_id"] for letter in left["results"]] == [bodies[2]["batch_id"]]


def closed_port() -> int:
    """A local port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable_env(tmp_path: Path) -> dict[str, str]:
    port = closed_port()
    return {
        **os.environ,
        "BATCHOPS_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/batchops",
        "BATCHOPS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
        "BATCHOPS_NAMESPACE": f"test-{uuid.uuid4().hex[:12]}",
        "BATCHOPS_HTTP_PORT": "0",
        "BATCHOPS_LOG_FORMAT": "json",
        "UNREACHABLE_PORT": str(port),
        "REQUEST_FILE": str(write_lines(tmp_path / "b.json", ACCEPT)),
    }


class TestUnreachableServices:
    @pytest.mark.parametrize(
        "command",
        [
            "batches list",
            # A fixed id: pytest-xdist's workers must collect the same test ids.
            f"batches show {uuid.UUID(int=1)}",
            "cleanup --older-than 1 --dry-run",
            "token create 1",
            "seed",
            "db upgrade",
        ],
    )
    def test_a_database_command_names_the_unreachable_database_without_a_traceback(
        self, unreachable_env: dict[str, str], command: str
    ) -> None:
        result = run_cli(unreachable_env, *command.split(), timeout=30)

        assert result.returncode == 1
        port = unreachable_env["UNREACHABLE_PORT"]
        assert f"batchops: cannot reach the database at 127.0.0.1:{port}" in result.stderr
        assert "Connection refused" in result.stderr
        assert "Traceback" not in result.stderr

    @pytest.mark.parametrize(
        "command",
        ["dead-letters list", "dead-letters replay", "publish {file}", "publish {file} --wait"],
    )
    def test_a_broker_command_names_the_unreachable_broker_without_a_traceback(
        self, unreachable_env: dict[str, str], command: str
    ) -> None:
        args = command.format(file=unreachable_env["REQUEST_FILE"]).split()

        result = run_cli(unreachable_env, *args, timeout=30)

        assert result.returncode == 1
        port = unreachable_env["UNREACHABLE_PORT"]
        assert f"batchops: cannot reach the broker at 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr

    def test_consume_exits_1_when_the_broker_is_unreachable(
        self, unreachable_env: dict[str, str]
    ) -> None:
        result = run_cli(unreachable_env, "consume", timeout=30)

        assert result.returncode == 1
        assert "cannot reach the broker" in result.stderr
        assert "Traceback" not in result.stderr


class TestSchemaCommand:
    def test_schema_asyncapi_writes_the_committed_document(self, tmp_path: Path) -> None:
        result = run_cli(dict(os.environ), "schema", "--asyncapi", "--output", str(tmp_path))

        assert result.returncode == 0, result.stderr
        written = tmp_path / "asyncapi.json"
        assert written.read_text(encoding="utf-8") == COMMITTED_ASYNCAPI.read_text(encoding="utf-8")

    def test_schema_still_writes_one_json_schema_per_model(self, tmp_path: Path) -> None:
        result = run_cli(dict(os.environ), "schema", "--output", str(tmp_path))

        assert result.returncode == 0, result.stderr
        assert {p.name for p in tmp_path.iterdir()} == {
            f"{name}.schema.json" for name in SCHEMA_MODELS
        }
