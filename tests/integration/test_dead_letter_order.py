"""`batchops dead-letters list` and `replay --batch-id` leave every other dead letter where it
was, now that `{ns}.dead` is a quorum queue (which puts a nacked message at its back)."""

from __future__ import annotations

import json
import uuid

import aio_pika

from consumer.config import Settings
from consumer.entrypoints import dead_letters
from publisher import BatchPublisher


async def dead_letter(settings: Settings, count: int) -> list[str]:
    """`count` dead letters, oldest first; returns their batch ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace):
        pass  # declares the topology
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        dlx = await channel.get_exchange(settings.topology.dead_letter_exchange)
        for batch_id in ids:
            body = json.dumps({"batch_id": batch_id, "operation_type": "order_update"})
            await dlx.publish(
                aio_pika.Message(body.encode(), user_id="guest"), routing_key="order_update"
            )
    finally:
        await connection.close()
    return ids


async def listed(settings: Settings, limit: int) -> list[str | None]:
    _, letters = await dead_letters.peek(settings.amqp_url, settings.topology, limit)
    return [letter.batch_id for letter in letters]


class TestDeadLettersKeepTheirPlace:
    async def test_listing_some_of_them_twice_shows_the_same_oldest_ones(
        self, settings: Settings
    ) -> None:
        ids = await dead_letter(settings, 4)

        assert await listed(settings, 2) == ids[:2]
        assert await listed(settings, 2) == ids[:2]
        assert await listed(settings, 10) == ids

    async def test_replaying_one_leaves_the_others_in_order(self, settings: Settings) -> None:
        ids = await dead_letter(settings, 4)

        report = await dead_letters.replay(
            settings.amqp_url, settings.topology, limit=None, batch_id=uuid.UUID(ids[2])
        )

        assert [letter.batch_id for letter in report.replayed] == [ids[2]]
        assert report.left == 3
        assert await listed(settings, 10) == [ids[0], ids[1], ids[3]]
