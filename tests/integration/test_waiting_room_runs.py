"""Requests run from the fair-share waiting room by a real consumer: one left leased by a
consumer that died runs once its lease runs out, one past the delivery limit gets its last
chance and is then given up on, one the service refuses is dead-lettered, each with a copy
in `{ns}.dead` the way the broker would have dead-lettered it from the queue, and one running
through a shutdown longer than its lease keeps its lease."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from consumer.adapters.pg import ConnectionPool
from consumer.adapters.tables import orders, waiting_requests
from consumer.adapters.waiting_room import SqlWaitingRoom
from consumer.config import Settings
from consumer.service_layer.intake import Delivery
from consumer.service_layer.waiting_room import ToPark
from contracts import BatchCompleted, BatchRejected, BatchStatus, ErrorCode, Outcome
from publisher import BatchPublisher
from tests.integration.helpers import (
    batch,
    dead_letter_messages,
    eventually,
    fetch,
    patch,
    result_rows,
    sql_waiting_room,
    waiting_on_a_lock,
)
from tests.integration.in_process import InProcessConsumer
from tests.support import EventLog, listen, observer_engine

DELIVERY_LIMIT = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"delivery_limit": DELIVERY_LIMIT, "fair_lease_seconds": 1.0})


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[EventLog]:
    """As the shared fixture, with the work queue declared at this module's delivery limit."""
    async with BatchPublisher(
        settings.amqp_url, namespace=settings.namespace, delivery_limit=DELIVERY_LIMIT
    ):
        pass
    async with listen(settings.amqp_url, settings.topology.results_exchange) as log:
        yield log


@pytest.fixture
async def room(settings: Settings) -> AsyncIterator[SqlWaitingRoom]:
    """The namespace's waiting room as a producer-side consumer that died would have left it."""
    pool = ConnectionPool(settings.database_url, size=2, command_timeout=10)
    yield sql_waiting_room(pool, settings.namespace, lease_seconds=1.0)
    await pool.close(timeout=5)


@pytest.fixture
async def consumer(settings: Settings, events: EventLog) -> AsyncIterator[InProcessConsumer]:
    consumers = InProcessConsumer(settings)
    yield consumers
    await consumers.close()


async def park(
    settings: Settings, room: SqlWaitingRoom, body: dict[str, Any], *, runs_before: int = 0
) -> None:
    """Park `body` as a consumer would have, with `runs_before` runs already spent on it."""
    await room.park_all(
        [
            ToPark(
                uuid.UUID(body["batch_id"]),
                body["actor_id"],
                Delivery(body=json.dumps(body).encode(), user_id="guest", message_id="m-1"),
                str(body["operation_type"]),
            )
        ]
    )
    if runs_before:
        engine = observer_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(waiting_requests)
                    .where(waiting_requests.c.batch_id == uuid.UUID(body["batch_id"]))
                    .values(attempts=runs_before)
                )
        finally:
            await engine.dispose()


async def rows(settings: Settings) -> int:
    found = await fetch(
        settings.database_url,
        select(func.count())
        .select_from(waiting_requests)
        .where(waiting_requests.c.namespace == settings.namespace),
    )
    count: int = found[0][0]
    return count


async def until_settled(settings: Settings) -> None:
    async def empty() -> bool:
        return await rows(settings) == 0

    await eventually(empty, timeout=30, what="the waiting room emptied")


async def dead_letter_copies(settings: Settings) -> list[tuple[bytes, dict[str, Any]]]:
    return await dead_letter_messages(settings.amqp_url, settings.topology.dead_letter_queue)


async def end_of(events: EventLog, batch_id: str) -> BatchCompleted | BatchRejected:
    """The batch's completion or rejection event."""
    wanted = uuid.UUID(batch_id)

    def ended(received: list[tuple[str, Any]]) -> list[BatchCompleted | BatchRejected]:
        return [
            e
            for _, e in received
            if isinstance(e, BatchCompleted | BatchRejected) and e.batch_id == wanted
        ]

    return ended(await events.wait_for(lambda ev: bool(ended(ev)), timeout=30))[0]


class TestALeaseLeftByADeadConsumer:
    async def test_runs_out_and_the_request_runs_once_elsewhere(
        self,
        settings: Settings,
        room: SqlWaitingRoom,
        consumer: InProcessConsumer,
        events: EventLog,
    ) -> None:
        body = batch(6, patch(3, notes="after a dead lease"), patch(6, notes="two"))
        await park(settings, room, body)
        assert await room.lease("a consumer killed since", avoid=[]) is not None

        await consumer.start()
        ended = await end_of(events, body["batch_id"])

        assert isinstance(ended, BatchCompleted)
        assert ended.status is BatchStatus.COMPLETED
        await until_settled(settings)
        assert len(events.operations(uuid.UUID(body["batch_id"]))) == 2
        assert await dead_letter_copies(settings) == []


class TestPastTheDeliveryLimit:
    async def test_its_last_chance_runs_it_whole_and_a_copy_is_dead_lettered(
        self,
        settings: Settings,
        room: SqlWaitingRoom,
        consumer: InProcessConsumer,
        events: EventLog,
    ) -> None:
        # Every run so far ended with its consumer: a bystander of crashes runs whole now.
        body = batch(6, patch(3, notes="last chance"), patch(6, notes="two"))
        await park(settings, room, body, runs_before=DELIVERY_LIMIT)

        await consumer.start()
        ended = await end_of(events, body["batch_id"])

        assert isinstance(ended, BatchCompleted)
        assert ended.status is BatchStatus.COMPLETED
        await until_settled(settings)
        [(copy, headers)] = await dead_letter_copies(settings)
        assert json.loads(copy) == body
        assert headers["x-first-death-reason"] == "delivery_limit"
        assert headers["x-first-death-queue"] == settings.topology.requests_queue
        assert headers["x-batchops-published-by"] == "guest"

    async def test_after_its_last_chance_the_operation_in_hand_is_given_up(
        self,
        settings: Settings,
        room: SqlWaitingRoom,
        consumer: InProcessConsumer,
        events: EventLog,
    ) -> None:
        body = batch(6, patch(3, notes="poison"), patch(6, notes="after it"))
        await park(settings, room, body, runs_before=DELIVERY_LIMIT + 1)

        await consumer.start()
        ended = await end_of(events, body["batch_id"])

        assert isinstance(ended, BatchCompleted)
        assert ended.status is BatchStatus.FAILED
        results = await result_rows(settings.database_url, body["batch_id"])
        assert [(r.outcome, r.error_code) for r in results] == [
            (Outcome.FAILED.value, ErrorCode.INTERNAL_ERROR.value),
            (Outcome.SKIPPED.value, ErrorCode.SKIPPED.value),
        ]
        await until_settled(settings)
        [(_, headers)] = await dead_letter_copies(settings)
        assert headers["x-first-death-reason"] == "delivery_limit"


class TestARequestTheServiceRefuses:
    async def test_is_rejected_and_dead_lettered_like_one_from_the_queue(
        self,
        settings: Settings,
        room: SqlWaitingRoom,
        consumer: InProcessConsumer,
        events: EventLog,
    ) -> None:
        body = batch(6, patch(3, notes="x"), mode="no such mode")
        await park(settings, room, body)

        await consumer.start()
        ended = await end_of(events, body["batch_id"])

        assert isinstance(ended, BatchRejected)
        assert ended.code is ErrorCode.VALIDATION_ERROR
        await until_settled(settings)
        [(copy, headers)] = await dead_letter_copies(settings)
        assert json.loads(copy) == body
        assert headers["x-first-death-reason"] == "rejected"


class TestAShutdownLongerThanALease:
    async def test_keeps_the_lease_of_the_batch_in_hand_until_it_ends(
        self,
        settings: Settings,
        room: SqlWaitingRoom,
        consumer: InProcessConsumer,
        events: EventLog,
    ) -> None:
        # The batch's operation waits on a row another transaction holds while its consumer
        # shuts down, for longer than the lease (1 s): the lease must be renewed until the
        # batch ends, or another consumer would take the request over and run it again.
        body = batch(6, patch(3, notes="held through a shutdown"))
        batch_id = uuid.UUID(body["batch_id"])
        engine = observer_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                holder = await conn.begin()
                await conn.execute(update(orders).where(orders.c.id == 3).values(notes="held"))
                await park(settings, room, body)
                await consumer.start()

                async def blocked() -> bool:
                    return await waiting_on_a_lock(settings.database_url)

                await eventually(blocked, what="the batch waiting on the held row")
                consumer.stop()
                first = await lease_end(settings, batch_id)

                async def renewed_past_its_first_end() -> bool:
                    now, end = await clock_and_lease_end(settings, batch_id)
                    return now > first and end > now

                await eventually(renewed_past_its_first_end, what="the lease renewed in shutdown")
                await holder.rollback()
        finally:
            await engine.dispose()

        completion = await end_of(events, body["batch_id"])
        assert isinstance(completion, BatchCompleted)
        assert completion.status is BatchStatus.COMPLETED
        await until_settled(settings)
        assert len(await result_rows(settings.database_url, batch_id)) == 1


async def clock_and_lease_end(settings: Settings, batch_id: uuid.UUID) -> tuple[datetime, datetime]:
    """The database's clock now and the request's lease end."""
    found = await fetch(
        settings.database_url,
        select(func.statement_timestamp(), waiting_requests.c.lease_until).where(
            waiting_requests.c.batch_id == batch_id
        ),
    )
    now: datetime = found[0][0]
    end: datetime = found[0][1]
    return now, end


async def lease_end(settings: Settings, batch_id: uuid.UUID) -> datetime:
    return (await clock_and_lease_end(settings, batch_id))[1]
