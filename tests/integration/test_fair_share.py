"""Fair share on the real broker (docs/contract.md, "Fair share"): one actor's flood does not
starve the others, deferring spends no delivery attempt, an actor alone is not looped, and the
duplicate a crash mid-deferral leaves runs once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from consumer.adapters.deferral import Deferrals
from consumer.bootstrap import Service
from consumer.config import Settings
from contracts import BatchCompleted, BatchRequest, Event
from publisher import BatchPublisher, broker_user
from tests.integration.helpers import batch, dead_letters, eventually, patch, result_rows
from tests.support import EventLog, listen

FLOODER, OTHER = 6, 1  # professional 1 and the admin of the seeded marketplace
FLOOD, FEW = 24, 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A delivery limit of 2: a deferral that spent an attempt would dead-letter a request that
    # was deferred twice.
    return settings.model_copy(update={"prefetch": 4, "fair_share": 1, "delivery_limit": 2})


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[EventLog]:
    """As the shared fixture, with the work queue declared at this module's delivery limit."""
    async with BatchPublisher(
        settings.amqp_url, namespace=settings.namespace, delivery_limit=settings.delivery_limit
    ):
        pass
    async with listen(settings.amqp_url, settings.topology.results_exchange) as log:
        yield log


@pytest.fixture
async def start(settings: Settings, events: EventLog) -> AsyncIterator[Any]:
    from tests.integration.in_process import InProcessConsumer

    consumers = InProcessConsumer(settings)
    yield consumers.start
    await consumers.close()


def work(actor: int, count: int, ops: int) -> list[dict[str, Any]]:
    return [
        batch(actor, *(patch(3 + 3 * (i % 9), notes=f"{actor}-{n}-{i}") for i in range(ops)))
        for n in range(count)
    ]


async def publish_all(settings: Settings, bodies: list[dict[str, Any]]) -> None:
    async with BatchPublisher(
        settings.amqp_url, namespace=settings.namespace, delivery_limit=settings.delivery_limit
    ) as publisher:
        for body in bodies:
            await publisher.publish(BatchRequest.model_validate(body))


def completed(received: list[tuple[str, Event]]) -> list[BatchCompleted]:
    return [e for _, e in received if isinstance(e, BatchCompleted)]


async def all_completed(events: EventLog, bodies: list[dict[str, Any]]) -> list[BatchCompleted]:
    wanted = {uuid.UUID(b["batch_id"]) for b in bodies}
    received = await events.wait_for(
        lambda ev: wanted <= {e.batch_id for e in completed(ev)}, timeout=60
    )
    return completed(received)


class TestAFloodDoesNotStarveOthers:
    async def test_the_few_batches_of_another_actor_finish_before_the_floods_backlog(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        flood, few = work(FLOODER, FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)  # the few wait behind the whole flood

        service: Service = await start()
        order = [e.batch_id for e in await all_completed(events, flood + few)]

        others = [order.index(uuid.UUID(b["batch_id"])) for b in few]
        flood_done_before_last_other = max(others) - (len(others) - 1)
        assert flood_done_before_last_other < FLOOD // 2, (
            f"the other actor's batches finished at positions {others} of {len(order)}: "
            "behind most of the flood"
        )
        assert service.consumer.fair_share.deferrals > 0

    async def test_without_fair_share_the_few_wait_for_the_whole_flood(
        self, settings: Settings, events: EventLog
    ) -> None:
        # The scenario above is one that needs fair share: switched off, FIFO order holds.
        from tests.integration.in_process import InProcessConsumer

        consumers = InProcessConsumer(settings.model_copy(update={"fair_share": 0}))
        flood, few = work(FLOODER, FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)
        try:
            await consumers.start()
            order = [e.batch_id for e in await all_completed(events, flood + few)]
        finally:
            await consumers.close()
        others = sorted(order.index(uuid.UUID(b["batch_id"])) for b in few)
        assert others[0] >= FLOOD - settings.prefetch, f"positions {others} of {len(order)}"


class TestNoAttemptIsSpent:
    async def test_requests_deferred_many_times_are_never_dead_lettered_and_run_once(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        flood, few = work(FLOODER, FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)

        service: Service = await start()
        done = await all_completed(events, flood + few)

        # More deferrals than flood requests: some were deferred twice or more, which with a
        # delivery limit of 2 would have dead-lettered them had a deferral counted.
        assert service.consumer.fair_share.deferrals > FLOOD
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []
        assert sorted(e.batch_id for e in done) == sorted(
            uuid.UUID(b["batch_id"]) for b in flood + few
        ), "every batch completes exactly once"
        for body in flood[:3]:
            rows = await result_rows(settings.database_url, body["batch_id"])
            assert [r.index for r in rows] == list(range(8))


class TestAnActorAlone:
    async def test_an_actor_alone_runs_its_batches_without_being_deferred_round_and_round(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        flood = work(FLOODER, FLOOD, ops=2)
        await publish_all(settings, flood)

        service: Service = await start()
        await all_completed(events, flood)

        # One lap of the queue (each waiting request deferred about once) shows nobody else
        # waits; after it the actor runs over its share instead of going round again.
        assert 0 < service.consumer.fair_share.deferrals < 2 * FLOOD


class TestACrashWhileDeferring:
    async def test_the_copy_and_the_redelivered_original_run_the_batch_once(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        body = work(OTHER, 1, ops=3)[0]
        await publish_all(settings, [body])
        await leave_a_deferred_copy_and_the_unacked_original(settings)

        await start()

        def two_completions(received: list[tuple[str, Event]]) -> bool:
            return len(completed(received)) == 2

        first, second = completed(await events.wait_for(two_completions))
        assert second == first, "the second copy re-sends the same completion"
        batch_id = uuid.UUID(body["batch_id"])
        assert len(events.operations(batch_id)) == 3, "no operation may run again"
        rows = await result_rows(settings.database_url, batch_id)
        assert [r.index for r in rows] == [0, 1, 2]
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []


async def leave_a_deferred_copy_and_the_unacked_original(settings: Settings) -> None:
    """What a consumer killed between the broker's confirm of the copy and its ack of the
    original leaves: the copy at the back of the queue, the original handed back."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        taking = await connection.channel()
        queue = await taking.get_queue(settings.topology.requests_queue)
        message = await queue.get(no_ack=False, fail=True)
        assert message is not None
        deferrals = Deferrals(settings.topology, broker_user(settings.amqp_url))
        deferrals.attach(await connection.channel(publisher_confirms=True))
        assert await deferrals.defer(message, lap="crashed-consumer-1")
        await taking.close()  # the "crash": the original goes back, unacknowledged

        async def both_waiting() -> bool:
            async with connection.channel() as channel:
                declared = await channel.declare_queue(
                    settings.topology.requests_queue, passive=True
                )
                return declared.declaration_result.message_count == 2

        await eventually(both_waiting, what="the copy and the original in the work queue")
    finally:
        await connection.close()
