"""Fair share on the real broker (docs/contract.md, "Guarantees"): one actor's flood does not
starve the others, waiting in the database spends no delivery attempt, an actor alone uses
every slot in queue order, and a consumer stopped or cut off with requests waiting leaves
every batch to run once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from consumer.adapters.tables import waiting_requests
from consumer.bootstrap import Service
from consumer.config import Settings
from contracts import BatchCompleted, BatchRequest, Event
from publisher import BatchPublisher
from tests.integration.helpers import (
    batch,
    batch_row,
    dead_letters,
    eventually,
    fetch,
    patch,
    publish_raw,
    with_a_full_write_queue,
)
from tests.integration.in_process import InProcessConsumer
from tests.support import EventLog, listen

FLOODER, OTHER = 6, 1  # professional 1 and the admin of the seeded marketplace
FLOOD, FEW = 24, 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A delivery limit of 2: a request that spent an attempt while it waited, once handed
    # back by a stopping consumer, would be dead-lettered.
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


async def waiting_rows(settings: Settings) -> int:
    """The namespace's requests in the waiting room, leased ones included."""
    rows = await fetch(
        settings.database_url,
        select(func.count())
        .select_from(waiting_requests)
        .where(waiting_requests.c.namespace == settings.namespace),
    )
    count: int = rows[0][0]
    return count


async def waiting_room_empties(settings: Settings) -> None:
    """A request's row goes once its batch is terminal, a moment after its completion is
    committed (with the consumer's next lease): its completion event may arrive first."""

    async def empty() -> bool:
        return await waiting_rows(settings) == 0

    await eventually(empty, what="the waiting room emptied")


def completed(received: list[tuple[str, Event]]) -> list[BatchCompleted]:
    return [e for _, e in received if isinstance(e, BatchCompleted)]


async def all_completed(events: EventLog, bodies: list[dict[str, Any]]) -> list[BatchCompleted]:
    wanted = {uuid.UUID(b["batch_id"]) for b in bodies}
    received = await events.wait_for(
        lambda ev: wanted <= {e.batch_id for e in completed(ev)}, timeout=60
    )
    return completed(received)


def ran_once_each(events: EventLog, done: list[BatchCompleted], bodies: list[dict[str, Any]]):
    """Every batch completed, and each of its operations ran once."""
    assert {e.batch_id for e in done} == {uuid.UUID(b["batch_id"]) for b in bodies}
    for body in bodies:
        batch_id = uuid.UUID(body["batch_id"])
        assert len(events.operations(batch_id)) == len(body["operations"]), batch_id


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
        assert service.consumer.scheduler.busiest <= settings.prefetch

    async def test_without_fair_share_the_few_wait_for_the_whole_flood(
        self, settings: Settings, events: EventLog
    ) -> None:
        # The scenario above is one that needs fair share: switched off, FIFO order holds.
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


class TestWaitingSpendsNoAttempt:
    async def test_a_flood_waits_in_the_database_is_never_dead_lettered_and_runs_once(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        flood, few = work(FLOODER, FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)

        service: Service = await start()
        done = await all_completed(events, flood + few)

        # Most of the flood waited in the waiting room, acknowledged, while others ran.
        parking = service.consumer.parking
        assert parking is not None
        assert parking.parked >= FLOOD // 2
        assert parking.leased == parking.parked
        await waiting_room_empties(settings)
        assert service.consumer.scheduler.waiting == 0  # nothing held in memory
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []
        ran_once_each(events, done, flood + few)


class TestAnActorAlone:
    async def test_an_actor_alone_runs_on_every_slot_in_queue_order(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        flood = work(FLOODER, FLOOD, ops=2)
        await publish_all(settings, flood)

        service: Service = await start()
        await all_completed(events, flood)

        assert settings.fair_share is not None
        assert service.consumer.scheduler.busiest > settings.fair_share, "over its share"
        rows = [await batch_row(settings.database_url, b["batch_id"]) for b in flood]
        started = [row.created_at for row in rows if row is not None]
        # Queue order: a batch never starts before one published `prefetch` places ahead of it
        # (those in between may start in any order: they run side by side).
        ahead = settings.prefetch
        late = [n for n in range(FLOOD - ahead) if started[n] > started[n + ahead]]
        assert late == [], f"batches started before one {ahead} places ahead of them: {late}"


class TestAConsumerStoppedWithRequestsWaiting:
    async def test_another_consumer_runs_every_batch_once(
        self, settings: Settings, events: EventLog
    ) -> None:
        flood, few = work(FLOODER, 4 * FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)
        first = InProcessConsumer(settings)
        service = await first.start()

        async def waiting() -> bool:
            return await waiting_rows(settings) > FLOOD

        try:
            await eventually(waiting, what="requests waiting in the database")
        finally:
            await first.close()  # must not wait for the parked ones to run
        left = len(flood + few) - len(completed(events.received))
        assert left > 0, "the stopping consumer ran every parked request instead of leaving them"
        assert service.consumer.scheduler.waiting == 0

        second = InProcessConsumer(settings)
        try:
            await second.start()
            done = await all_completed(events, flood + few)
        finally:
            await second.close()
        # A request given back by the stopping consumer spent no run: with a delivery limit
        # of 2, none reaches it.
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []
        await waiting_room_empties(settings)
        ran_once_each(events, done, flood + few)


class TestAChannelLostWhileParking:
    async def test_every_delivery_of_the_dead_channel_runs_once(
        self,
        settings: Settings,
        events: EventLog,
        start: Any,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        flood, few = work(FLOODER, 4 * FLOOD, ops=8), work(OTHER, FEW, ops=1)
        await publish_all(settings, flood + few)
        service: Service = await start()
        parking = service.consumer.parking
        assert parking is not None

        async def parking_began() -> bool:
            return parking.parked > 0

        await eventually(parking_began, what="requests parked")
        # The broker closes a channel that acknowledges a tag it never delivered: the robust
        # connection opens a new one, and the broker hands out again there what was not
        # acknowledged (some already parked: they are stored once).
        assert service.consumer.channel is not None
        underlay = await service.consumer.channel.get_underlay_channel()
        # The acknowledgements of the parked requests and the events' publishes fill the
        # connection's queue of frames to write: in some runs it is full as the broker closes
        # the channel; here in every run.
        with_a_full_write_queue(monkeypatch)
        await underlay.basic_ack(10**9)

        async def closed() -> bool:
            return underlay.is_closed

        await eventually(closed, what="the broker closed the channel")

        done = await all_completed(events, flood + few)
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []
        await waiting_room_empties(settings)
        ran_once_each(events, done, flood + few)
        # Only the channel went: no acknowledgement of it reached the broker after its close
        # handshake (a protocol error for which the broker closes the whole connection).
        # (The format string, not the message: some of aio-pika's records cannot be rendered.)
        logged = [(r.name, str(r.msg)) for r in caplog.records]
        resets = [msg for name, msg in logged if name == "aiormq.connection" and "close" in msg]
        assert resets == []


class TestARequestTheDatabaseWillNotStore:
    async def test_runs_from_its_delivery_and_the_others_park_without_it(
        self, settings: Settings, events: EventLog, start: Any
    ) -> None:
        # A NUL in a header: PostgreSQL refuses it in a text column, so the request cannot be
        # parked; parked in the same insert as others, it must not take them down with it.
        flood = work(FLOODER, FLOOD, ops=8)
        odd = batch(OTHER, patch(3, notes="odd"))
        await publish_all(settings, flood)
        await publish_raw(
            settings.amqp_url,
            settings.topology.requests_exchange,
            json.dumps(odd).encode(),
            headers={"traceparent": "00-\x00"},
        )

        service: Service = await start()
        done = await all_completed(events, [*flood, odd])

        parking = service.consumer.parking
        assert parking is not None
        assert parking.parked >= FLOOD // 2
        await waiting_room_empties(settings)
        assert await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == []
        ran_once_each(events, done, [*flood, odd])
