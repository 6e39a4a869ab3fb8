"""The consumer's watchdog: a subscription the broker cancelled, or that stalled, is restored."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings
from contracts import BatchStatus
from tests.faults.pgserver import free_port
from tests.integration.helpers import batch, eventually, patch, publish_raw
from tests.support import EventLog


@pytest.fixture
async def watched(settings: Settings, events: EventLog) -> AsyncIterator[Service]:
    """The service with a fast watchdog and its probes (/readyz) on a free port."""
    svc = bootstrap(
        settings.model_copy(
            update={
                "watchdog_interval_seconds": 0.2,
                "http_host": "127.0.0.1",
                "metrics_port": free_port(),
            }
        )
    )
    task = asyncio.create_task(svc.run())
    await asyncio.wait_for(svc.started.wait(), 20)
    yield svc
    svc.stop()
    await asyncio.wait_for(task, 30)


async def readiness(service: Service) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{service.settings.metrics_port}/readyz")


async def test_a_consumer_cancelled_by_the_broker_resubscribes_and_is_ready_again(
    settings: Settings, events: EventLog, watched: Service
) -> None:
    before = await readiness(watched)
    assert before.status_code == 200, before.text

    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        # Deleting the queue makes the broker cancel every consumer of it (basic.cancel); the
        # watchdog declares it again and re-subscribes.
        await channel.queue_delete(settings.topology.requests_queue, if_unused=False)

        async def restored() -> bool:
            return watched.consumer.is_consuming and watched.consumer.resubscriptions > 0

        await eventually(restored, what="the watchdog re-subscribed")
    finally:
        await connection.close()

    # Not-ready cannot be caught in between: `is_consuming` turns false only when the
    # watchdog's check finds the cancel, and that same check re-subscribes.
    assert watched.consumer.resubscriptions == 1, "one cancel, one re-subscription"
    after = await readiness(watched)
    assert after.status_code == 200, after.text
    assert after.json()["checks"]["consumer"] is True

    body = batch(6, patch(3, notes="after the cancel"))
    await publish_raw(
        settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
    )
    completion = await events.completion(uuid.UUID(body["batch_id"]))
    assert completion.status is BatchStatus.COMPLETED


async def test_an_idle_consumer_that_started_with_a_backlog_is_not_taken_for_stalled(
    settings: Settings, events: EventLog
) -> None:
    # The stall check reads how many messages wait in the queue now, not when the consumer
    # started (a queue object aio-pika kept from then still says "3 ready").
    backlog = [batch(6, patch(3, notes=f"backlog {n}")) for n in range(3)]
    for body in backlog:
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )
    svc = bootstrap(
        settings.model_copy(update={"watchdog_interval_seconds": 0.05, "stall_seconds": 0.2})
    )
    task = asyncio.create_task(svc.run())
    try:
        for body in backlog:
            await events.completion(uuid.UUID(body["batch_id"]))
        idle_since = time.monotonic()

        # Idle past the stall time, for several of the watchdog's checks.
        async def idle_for_a_while() -> bool:
            return time.monotonic() - idle_since > 0.2 + 10 * 0.05

        await eventually(idle_for_a_while, what="the consumer idle past the stall time")
        assert svc.consumer.resubscriptions == 0
    finally:
        svc.stop()
        await asyncio.wait_for(task, 30)


async def test_a_look_at_a_deleted_work_queue_leaves_the_consumers_channel_open(
    settings: Settings, events: EventLog
) -> None:
    # The broker closes the channel of a passive declare that finds no queue: the watchdog's
    # look at the queue's depth must not take the consumer's channel down with it.
    svc = bootstrap(settings.model_copy(update={"watchdog_interval_seconds": 600}))
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.wait_for(svc.started.wait(), 20)
        assert svc.consumer.channel is not None
        underlay = await svc.consumer.channel.get_underlay_channel()
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(settings.topology.requests_queue, if_unused=False)

        with pytest.raises(ChannelNotFoundEntity):
            await svc.consumer._messages_ready()

        assert not underlay.is_closed
    finally:
        svc.stop()
        await asyncio.wait_for(task, 30)


async def test_an_idle_consumer_while_messages_wait_resubscribes_and_goes_on_consuming(
    settings: Settings, events: EventLog
) -> None:
    # A stall the broker cannot be made to show on purpose (messages ready, none handed to an
    # idle subscriber): the watchdog's look at the queue is told that 3 wait.
    svc = bootstrap(
        settings.model_copy(update={"watchdog_interval_seconds": 0.05, "stall_seconds": 1.0})
    )
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.wait_for(svc.started.wait(), 20)

        async def three_ready() -> int:
            return 3

        svc.consumer._messages_ready = three_ready  # type: ignore[method-assign]

        async def resubscribed() -> bool:
            return svc.consumer.resubscriptions > 0

        await eventually(resubscribed, what="the stalled consumer re-subscribed")

        # The new subscription gets deliveries; a re-subscription counts as fed, so the next
        # one could come only after another stall time (1 s), not at every check.
        body = batch(6, patch(3, notes="after the stall"))
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )
        completion = await events.completion(uuid.UUID(body["batch_id"]))
        assert completion.status is BatchStatus.COMPLETED
        assert svc.consumer.resubscriptions == 1
    finally:
        svc.stop()
        await asyncio.wait_for(task, 30)
