"""The upgrade path of the queues: a work queue declared by the previous version (at-most-once
dead-lettering) and the classic dead-letter queues of earlier versions are moved to the current
arguments by `batchops queues migrate`, messages kept, against the real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from consumer.adapters.queue_migration import (
    DeclaredQueue,
    MigrationRefused,
    QueueState,
    declared_queues,
    holding_queue,
    inspect,
    migrate,
)
from consumer.bootstrap import bootstrap
from consumer.config import Settings
from contracts import BatchStatus
from publisher import TopologyMismatchError
from tests.integration.helpers import batch, patch
from tests.support import EventLog


def previous_arguments(settings: Settings) -> dict[str, Any]:
    """What the version before at-least-once dead-lettering declared."""
    current = settings.topology.requests_queue_arguments()
    return {
        key: current[key] for key in ("x-queue-type", "x-delivery-limit", "x-dead-letter-exchange")
    }


def work_queue(settings: Settings) -> DeclaredQueue:
    return declared_queues(settings.topology)[0]


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    yield connection
    channel = await connection.channel()
    for queue in declared_queues(settings.topology):
        await channel.queue_delete(holding_queue(queue.name))
    await connection.close()


async def declare_previous_version(
    connection: AbstractRobustConnection, settings: Settings, bodies: list[bytes]
) -> None:
    """The work queue as the previous version left it, with requests waiting in it."""
    topology = settings.topology
    channel = await connection.channel(publisher_confirms=True)
    await channel.queue_delete(topology.requests_queue)  # declared by a fixture, if at all
    requests = await channel.declare_exchange(
        topology.requests_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(
        topology.requests_queue, durable=True, arguments=previous_arguments(settings)
    )
    await queue.bind(requests, routing_key="#")
    for number, body in enumerate(bodies):
        await requests.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"m{number}",
                correlation_id=f"c{number}",
                user_id="guest",
                headers={"traceparent": f"00-{number:032x}-{number:016x}-01"},
            ),
            routing_key="order_update",
        )
    await channel.close()


async def drain(connection: AbstractRobustConnection, queue_name: str) -> list[Any]:
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=False)
    found = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(message)
    await channel.close()
    return found


class TestQueuesMigrate:
    async def test_the_previous_version_s_queue_is_detected_and_refused_at_start_up(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        await declare_previous_version(connection, settings, [])

        assert await inspect(connection, work_queue(settings)) is QueueState.OUTDATED
        with pytest.raises(TopologyMismatchError, match="batchops queues migrate"):
            await bootstrap(settings).run()

    async def test_migration_keeps_every_message_with_its_properties_in_order(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        bodies = [json.dumps({"n": n}).encode() for n in range(5)]
        await declare_previous_version(connection, settings, bodies)

        report = (await migrate(connection, settings.topology))[0]

        assert (report.was, report.moved_out, report.moved_in) == (QueueState.OUTDATED, 5, 5)
        assert await inspect(connection, work_queue(settings)) is QueueState.CURRENT
        moved = await drain(connection, settings.topology.requests_queue)
        assert [m.body for m in moved] == bodies
        assert [(m.message_id, m.correlation_id, m.user_id) for m in moved] == [
            (f"m{n}", f"c{n}", "guest") for n in range(5)
        ]
        assert moved[3].headers["traceparent"] == f"00-{3:032x}-{3:016x}-01"
        assert moved[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT

    async def test_after_migration_the_queue_dead_letters_at_least_once_and_the_service_runs(
        self, settings: Settings, events: EventLog, connection: AbstractRobustConnection
    ) -> None:
        body = batch(6, patch(3, notes="waited through the upgrade"))
        await declare_previous_version(connection, settings, [json.dumps(body).encode()])
        await migrate(connection, settings.topology)

        service = bootstrap(settings)
        task = asyncio.create_task(service.run())
        try:
            completion = await events.completion(uuid.UUID(body["batch_id"]))
        finally:
            service.stop()
            await asyncio.wait_for(task, 30)

        assert completion.status is BatchStatus.COMPLETED
        channel = await connection.channel()
        # Passive re-declaration with the current arguments succeeds only if they match.
        await channel.declare_queue(
            settings.topology.requests_queue,
            durable=True,
            arguments=settings.topology.requests_queue_arguments(),
        )
        await channel.close()

    async def test_a_queue_with_consumers_is_not_migrated(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        await declare_previous_version(connection, settings, [b"{}"])
        channel = await connection.channel()
        queue = await channel.get_queue(settings.topology.requests_queue, ensure=False)

        async def hold(_: object) -> None:
            return None

        await queue.consume(hold)

        with pytest.raises(MigrationRefused, match="stop every"):
            await migrate(connection, settings.topology)

        await channel.close()
        assert await inspect(connection, work_queue(settings)) is QueueState.OUTDATED

    async def test_a_migration_cut_short_is_finished_by_the_next_run(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        # As if a run stopped right after deleting the old queue: requests wait in the holding
        # queue, which is still bound to the requests exchange.
        channel = await connection.channel(publisher_confirms=True)
        requests = await channel.declare_exchange(
            settings.topology.requests_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        holding = await channel.declare_queue(
            holding_queue(settings.topology.requests_queue),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await holding.bind(requests, routing_key="#")
        await requests.publish(aio_pika.Message(b'{"late": true}'), routing_key="order_update")
        await channel.close()

        report = (await migrate(connection, settings.topology))[0]

        assert (report.was, report.moved_in) == (QueueState.ABSENT, 1)
        assert [m.body for m in await drain(connection, settings.topology.requests_queue)] == [
            b'{"late": true}'
        ]

    def test_the_command_reports_what_it_did(self, settings: Settings) -> None:
        env = {
            "BATCHOPS_AMQP_URL": settings.amqp_url,
            "BATCHOPS_NAMESPACE": settings.namespace,
            "BATCHOPS_DATABASE_URL": settings.database_url,
        }
        result = subprocess.run(
            [sys.executable, "-m", "consumer.entrypoints.cli", "queues", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "is declared with the current arguments" in result.stdout


async def declare_classic_dead_letter_queues(
    connection: AbstractRobustConnection, settings: Settings, bodies: list[bytes]
) -> None:
    """`{ns}.dead` and `{ns}.dead.reconcile` as versions before quorum dead-letter queues left
    them (classic queues), each holding a copy of every dead letter."""
    topology = settings.topology
    channel = await connection.channel(publisher_confirms=True)
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    for name in (topology.dead_letter_queue, topology.dead_letter_reconcile_queue):
        await channel.queue_delete(name)  # declared by a fixture, if at all
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(dlx, routing_key="")
    for number, body in enumerate(bodies):
        await dlx.publish(
            aio_pika.Message(
                body,
                message_id=f"d{number}",
                user_id="guest",
                headers={"x-first-death-reason": "rejected", "x-first-death-queue": "old"},
            ),
            routing_key="order_update",
        )
    await channel.close()


class TestDeadLetterQueuesBecomeQuorumQueues:
    async def test_classic_dead_letter_queues_are_refused_at_start_up(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        await declare_classic_dead_letter_queues(connection, settings, [])

        dead = declared_queues(settings.topology)[1]
        assert await inspect(connection, dead) is QueueState.OUTDATED
        with pytest.raises(TopologyMismatchError, match=r"classic queue.*batchops queues migrate"):
            await bootstrap(settings).run()

    async def test_migration_makes_them_quorum_queues_with_every_dead_letter_kept(
        self, settings: Settings, connection: AbstractRobustConnection
    ) -> None:
        bodies = [json.dumps({"dead": n}).encode() for n in range(3)]
        await declare_classic_dead_letter_queues(connection, settings, bodies)

        reports = {r.queue: r for r in await migrate(connection, settings.topology)}

        topology = settings.topology
        for name in (topology.dead_letter_queue, topology.dead_letter_reconcile_queue):
            assert (reports[name].was, reports[name].moved_out, reports[name].moved_in) == (
                QueueState.OUTDATED,
                3,
                3,
            ), name
        assert reports[topology.requests_queue].was is QueueState.ABSENT
        for queue in declared_queues(topology):
            assert await inspect(connection, queue) is QueueState.CURRENT, queue.name
        kept = await drain(connection, topology.dead_letter_queue)
        assert [m.body for m in kept] == bodies
        assert [m.message_id for m in kept] == ["d0", "d1", "d2"]
        assert kept[0].headers["x-first-death-reason"] == "rejected"
        assert len(await drain(connection, topology.dead_letter_reconcile_queue)) == 3
