"""The CLI an operator meets: the mistakes they can make end in one line and a documented exit
code, `status` says what the service is doing, dead letters show why and what, `purge` and
`teardown` ask first."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable

import aio_pika
import pytest
from sqlalchemy import insert, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.adapters.tables import waiting_requests
from consumer.config import Settings
from tests.e2e.conftest import ServeProcess, run_cli
from tests.e2e.test_operator_cli import consumer_running, has_depth
from tests.integration.helpers import batch, publish_raw
from tests.support import EventLog, observer_engine

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def one_line(stderr: str) -> str:
    """The single line a failed command prints (and the proof there is no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert lines[0].startswith("batchops: "), lines[0]
    return lines[0]


class TestMistakes:
    def test_a_port_in_use_is_one_line(self, cli_env: dict[str, str]) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = {**cli_env, "BATCHOPS_HTTP_HOST": "127.0.0.1", "BATCHOPS_HTTP_PORT": str(port)}

            api = run_cli(env, "api", timeout=60)

        assert api.returncode == EXIT_FAILED
        line = one_line(api.stderr)
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line

    @pytest.mark.parametrize(
        ("variable", "value", "said"),
        [
            ("BATCHOPS_DATABASE_URL", "postgresql://postgres@127.0.0.1/x", "postgresql+asyncpg://"),
            ("BATCHOPS_DATABASE_URL", "localhost/batchops", "is not a URL"),
            ("BATCHOPS_AMQP_URL", "amqp:/guest@localhost", "is not an amqp:// or amqps:// URL"),
        ],
    )
    def test_a_misspelled_url_or_a_missing_driver_is_bad_input(
        self, cli_env: dict[str, str], variable: str, value: str, said: str
    ) -> None:
        for command in (["batches", "list"], ["serve"]):
            done = run_cli({**cli_env, variable: value}, *command)

            assert done.returncode == EXIT_BAD_INPUT
            assert said in one_line(done.stderr)

    def test_unreachable_services_are_one_line_each(self, cli_env: dict[str, str]) -> None:
        env = {
            **cli_env,
            "BATCHOPS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
            "BATCHOPS_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x",
        }
        listed = run_cli(env, "dead-letters", "list")
        shown = run_cli(env, "batches", "list")

        assert listed.returncode == EXIT_FAILED
        assert "cannot reach the broker at 127.0.0.1:1" in one_line(listed.stderr)
        assert shown.returncode == EXIT_FAILED
        assert "cannot reach the database at 127.0.0.1:1" in one_line(shown.stderr)

    def test_a_service_refuses_a_database_that_does_not_exist(
        self, cli_env: dict[str, str], settings: Settings
    ) -> None:
        missing = make_url(settings.database_url).set(database="batchops_no_such_database")
        env = {**cli_env, "BATCHOPS_DATABASE_URL": missing.render_as_string(False)}

        served = run_cli(env, "serve")

        assert served.returncode == EXIT_FAILED
        line = one_line(served.stderr)
        assert 'database "batchops_no_such_database" does not exist' in line
        assert "batchops db upgrade" in line


class TestStatus:
    async def test_status_shows_queues_consumers_work_the_outbox_and_the_last_batch(
        self,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        settings: Settings,
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        sent = batch(6)  # no operations: refused, dead-lettered and kept as a rejected batch
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(sent).encode()
        )
        await events.rejection()
        await has_depth(settings, settings.topology.dead_letter_queue, 1)

        text = run_cli(cli_env, "status")
        document = json.loads(run_cli(cli_env, "status", "--json").stdout)

        assert text.returncode == 0, text.stderr
        requests = settings.topology.requests_queue
        assert any(
            line.split() == [requests, "0", "ready", "1", "consumers"]
            for line in text.stdout.splitlines()
        ), text.stdout
        assert "dead letters: 1" in text.stdout
        assert "outbox: 0 events not yet published" in text.stdout
        assert f"last batch: {sent['batch_id']} order_update rejected" in text.stdout
        assert document["database"]["in_flight"] == 0
        queues = {q["name"]: q for q in document["queues"]}
        assert queues[settings.topology.dead_letter_queue]["messages"] == 1

    async def test_status_counts_the_requests_waiting_under_fair_share(
        self, cli_env: dict[str, str], settings: Settings, events: EventLog
    ) -> None:
        engine = observer_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(waiting_requests).values(
                        namespace=settings.namespace,
                        batch_id=uuid.uuid4(),
                        body_sha256=bytes(32),
                        actor_id=6,
                        body=b"{}",
                        routing_key="order_update",
                    )
                )
            text = run_cli(cli_env, "status")
            document = json.loads(run_cli(cli_env, "status", "--json").stdout)
        finally:
            async with engine.begin() as conn:
                await conn.execute(
                    waiting_requests.delete().where(
                        waiting_requests.c.namespace == settings.namespace
                    )
                )
            await engine.dispose()

        assert "waiting for a slot under fair share: 1 requests" in text.stdout, text.stdout
        assert document["database"]["fair_share_waiting"] == 1


class TestDeadLetters:
    async def test_list_says_why_and_shows_a_binary_body_in_hex_and_replay_leaves_none(
        self,
        cli_env: dict[str, str],
        serve: Callable[..., ServeProcess],
        settings: Settings,
        events: EventLog,
    ) -> None:
        await consumer_running(serve)
        await publish_raw(settings.amqp_url, settings.topology.requests_exchange, b"\x00\xfe{")
        await events.rejection()
        dead = settings.topology.dead_letter_queue
        await has_depth(settings, dead, 1)

        listed = run_cli(cli_env, "dead-letters", "list")
        letter = json.loads(run_cli(cli_env, "dead-letters", "list", "--json").stdout)["results"][0]
        replayed = run_cli(cli_env, "dead-letters", "replay")

        assert "reason  rejected: VALIDATION_ERROR: request: Invalid JSON" in listed.stdout
        assert "body    (hex) 00 fe 7b" in listed.stdout
        assert letter["body_encoding"] == "hex"
        assert letter["body"] == "00 fe 7b"
        assert letter["why"].startswith("VALIDATION_ERROR")
        assert letter["headers"]["x-first-death-reason"] == "rejected"
        # The copy is refused again and comes back: it is not one of those "left".
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed 1 dead letters to {settings.topology.requests_exchange}; 0 left" in (
            replayed.stdout
        )

    async def test_purge_asks_first_and_deletes_with_yes(
        self, cli_env: dict[str, str], settings: Settings, events: EventLog
    ) -> None:
        exchange = settings.topology.requests_exchange
        async with await aio_pika.connect(settings.amqp_url) as connection:
            channel = await connection.channel()
            # The topology exists (the events fixture declared it): dead-letter two by hand.
            dlx = await channel.get_exchange(settings.topology.dead_letter_exchange)
            for body in (b"one", b"two"):
                await dlx.publish(aio_pika.Message(body), routing_key=exchange)
        await has_depth(settings, settings.topology.dead_letter_queue, 2)

        refused = run_cli(cli_env, "dead-letters", "purge")  # no terminal to ask on
        purged = run_cli(cli_env, "dead-letters", "purge", "--yes")

        assert refused.returncode == EXIT_BAD_INPUT
        assert "pass --yes" in one_line(refused.stderr)
        assert purged.returncode == 0, purged.stderr
        assert f"purged 2 dead letters from {settings.topology.dead_letter_queue}" in (
            purged.stdout
        )
        await has_depth(settings, settings.topology.dead_letter_queue, 0)


class TestTeardown:
    async def test_teardown_removes_the_namespace_and_its_database_once_confirmed(
        self, cli_env: dict[str, str], settings: Settings, events: EventLog
    ) -> None:
        refused = run_cli(cli_env, "teardown")
        assert refused.returncode == EXIT_BAD_INPUT
        assert "pass --yes" in one_line(refused.stderr)

        done = run_cli(cli_env, "teardown", "--yes")

        assert done.returncode == 0, done.stderr
        assert "dropped the database" in done.stdout
        url = make_url(settings.database_url)
        engine = create_async_engine(url.set(database="postgres"))
        try:
            async with engine.connect() as conn:
                exists = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": url.database},
                )
        finally:
            await engine.dispose()
        assert exists is None
        async with await aio_pika.connect(settings.amqp_url) as connection:
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelClosed):
                await channel.declare_queue(settings.topology.requests_queue, passive=True)

    async def test_keeping_the_database_deletes_only_the_namespaces_waiting_requests(
        self, cli_env: dict[str, str], settings: Settings, events: EventLog
    ) -> None:
        ours, theirs = settings.namespace, f"{settings.namespace}-other"
        engine = observer_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                for namespace in (ours, ours, theirs):
                    await conn.execute(
                        insert(waiting_requests).values(
                            namespace=namespace,
                            batch_id=uuid.uuid4(),
                            body_sha256=bytes(32),
                            actor_id=6,
                            body=b"{}",
                            routing_key="order_update",
                        )
                    )

            done = run_cli(cli_env, "teardown", "--yes", "--keep-database")

            assert done.returncode == 0, done.stderr
            assert "deleted the namespace's 2 requests waiting in the database" in done.stdout
            async with engine.connect() as conn:
                left = await conn.execute(
                    select(waiting_requests.c.namespace).where(
                        waiting_requests.c.namespace.in_([ours, theirs])
                    )
                )
                assert [row.namespace for row in left] == [theirs]
                await conn.execute(
                    waiting_requests.delete().where(waiting_requests.c.namespace == theirs)
                )
                await conn.commit()
        finally:
            await engine.dispose()
