"""A channel the broker closes gives back the messages delivered on it unacknowledged, even
when the broker closes it while the connection's queue of frames to write is full (a flood of
acknowledgements and event publishes fills it): publisher/_close_answer.py. Without it, the
broker keeps them with the closed channel until the connection closes."""

from __future__ import annotations

import uuid
from importlib.metadata import version

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from consumer.config import Settings
from publisher import connect_robust
from publisher._close_answer import CHECKED_UP_TO
from tests.integration.helpers import eventually, with_a_full_write_queue

MESSAGES = 5


async def test_the_broker_hands_out_again_what_a_channel_it_closed_held(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"close-answer-{uuid.uuid4().hex[:8]}"
    connection = await connect_robust(settings.amqp_url)
    with_a_full_write_queue(monkeypatch)
    try:
        channel = await connection.channel()
        # Another channel after it, as the service has: the reopened channel gets a new
        # number, so the broker sees nothing wrong with it.
        await connection.channel()
        await channel.set_qos(prefetch_count=MESSAGES)
        # A quorum queue, as the work queue is: it takes back what a channel held only once
        # the channel is gone (a classic queue does as soon as the channel fails).
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        for n in range(MESSAGES):
            await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), name)
        first: list[AbstractIncomingMessage] = []
        again: list[AbstractIncomingMessage] = []

        async def hold(message: AbstractIncomingMessage) -> None:
            (again if message.redelivered else first).append(message)

        await queue.consume(hold)

        async def all_delivered() -> bool:
            return len(first) == MESSAGES

        await eventually(all_delivered, what="the first deliveries")
        underlay = await channel.get_underlay_channel()
        # An acknowledgement of a tag never delivered: the broker closes the channel.
        await underlay.basic_ack(10**9)

        async def handed_out_again() -> bool:
            return len(again) == MESSAGES

        await eventually(
            handed_out_again,
            # With an aiormq newer than the fix was checked against, the fix is off.
            what=f"the deliveries of the closed channel again (aiormq {version('aiormq')}, "
            f"publisher/_close_answer.py checked up to {CHECKED_UP_TO})",
        )
        assert sorted(m.body for m in again) == sorted(m.body for m in first)
        assert underlay.is_closed
    finally:
        await connection.close()
        cleanup = await aio_pika.connect(settings.amqp_url)
        async with cleanup:
            await (await cleanup.channel()).queue_delete(name)
