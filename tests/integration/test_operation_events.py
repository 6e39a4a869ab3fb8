"""Operation events read from operation_results past the relay's position (the real
database): whole transactions only, nothing read twice, a row committed late by a transaction
that began early still read, and the position's pending set no larger than the transactions
running at one moment."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import literal_column, select

from consumer.adapters.console_queries import batch_events
from consumer.adapters.database import create_engine
from consumer.adapters.event_publisher import EventPublisher
from consumer.adapters.operation_events import advance, batches_behind, take_operation_events
from consumer.adapters.outbox import SqlOutboxRepository
from consumer.adapters.pg import ConnectionPool, Session, Statement
from consumer.adapters.queries import backlog
from consumer.adapters.tables import relay_positions
from consumer.entrypoints.relay import OutboxRelay
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.unit_of_work import OutboxMessage
from contracts import operation_event_id
from tests.faults.test_operation_events_order import INSERT_BATCH, INSERT_RESULT, an_event

EXCHANGE = "test.results"
_POSITION = Statement(
    select(relay_positions.c.horizon, relay_positions.c.pending, literal_column("xmin::text"))
)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(database_url, size=3, command_timeout=10)
    yield pool
    await pool.close(timeout=5)


async def commit_results(pool: ConnectionPool, count: int) -> uuid.UUID:
    """One transaction writing `count` result rows of a new batch."""
    batch_id = uuid.uuid4()
    session = await pool.acquire()
    try:
        connection = session._connection
        await connection.execute(
            INSERT_BATCH.replace(":b", "$1").replace(":f", "$2"), batch_id, uuid.uuid4().bytes * 2
        )
        async with connection.transaction():
            for index in range(count):
                await connection.execute(
                    INSERT_RESULT.replace(":b", "$1").replace(":i", "$2").replace(":event", "$3"),
                    batch_id,
                    index,
                    an_event(batch_id, index),
                )
    finally:
        await pool.release(session)
    return batch_id


@dataclass
class OpenTransaction:
    """A transaction of the test's that wrote one result row and is still open."""

    session: Session
    transaction: Any  # asyncpg's
    batch_id: uuid.UUID
    txid: int


async def open_transaction_with_a_result(pool: ConnectionPool) -> OpenTransaction:
    batch_id = await commit_results(pool, 0)
    session = await pool.acquire()
    connection = session._connection
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute(
        INSERT_RESULT.replace(":b", "$1").replace(":i", "$2").replace(":event", "$3"),
        batch_id,
        0,
        an_event(batch_id, 0),
    )
    txid = await connection.fetchval("SELECT pg_current_xact_id()::text::bigint")
    return OpenTransaction(session, transaction, batch_id, int(txid))


async def take_all(session: Session, limit: int) -> list[str]:
    """Every unpublished event, pass after pass of `limit`, as routing key:event id."""
    taken: list[str] = []
    while True:
        events = await take_operation_events(session, EXCHANGE, limit)
        assert events is not None
        taken += [m.routing_key + ":" + str(m.message_id) for m in events.messages]
        await advance(session, events)
        await session.commit()
        if not events.messages:
            return taken


async def position(session: Session) -> tuple[int, list[int], int]:
    """(horizon, pending, the row version's xmin: it changes with every write)."""
    row: Any = await session.fetchrow(_POSITION)
    await session.commit()
    return int(row[0]), list(row[1]), int(row[2])


class TestReadingPastThePosition:
    async def test_every_event_is_read_once_and_a_transaction_is_never_cut(
        self, pool: ConnectionPool
    ) -> None:
        for count in (3, 4, 3):
            await commit_results(pool, count)
        session = await pool.acquire()
        try:
            first = await take_operation_events(session, EXCHANGE, 5)
            assert first is not None
            assert len(first.messages) == 3, (
                "5 rows would cut the second transaction short: only the first one goes"
            )
            assert not first.complete, "more were committed than this pass took"
            await session.rollback()

            taken = await take_all(session, 5)
        finally:
            await pool.release(session)
        assert len(taken) == 10
        assert len(set(taken)) == 10, "nothing read twice"

    async def test_a_transaction_larger_than_the_limit_is_read_whole(
        self, pool: ConnectionPool
    ) -> None:
        await commit_results(pool, 7)
        session = await pool.acquire()
        try:
            events = await take_operation_events(session, EXCHANGE, 5)
            assert events is not None
            assert len(events.messages) == 7
        finally:
            await pool.release(session)

    async def test_only_one_relay_reads_operation_events_at_a_time(
        self, pool: ConnectionPool
    ) -> None:
        await commit_results(pool, 2)
        one, other = await pool.acquire(), await pool.acquire()
        try:
            assert await take_operation_events(one, EXCHANGE, 10) is not None
            assert await take_operation_events(other, EXCHANGE, 10) is None
        finally:
            await pool.release(one)
            await pool.release(other)


class TestBatchesBehindAPass:
    """Which completions may go out with a pass that did not read everything (the relay holds
    back the completion of a batch whose operation events the pass does not cover)."""

    async def test_a_batch_the_pass_covers_is_not_behind_and_one_past_it_is(
        self, pool: ConnectionPool
    ) -> None:
        covered = await commit_results(pool, 3)
        past = await commit_results(pool, 4)
        session = await pool.acquire()
        try:
            events = await take_operation_events(session, EXCHANGE, 5)
            assert events is not None
            assert not events.complete, "the premise: a pass that leaves events for the next"
            without_events = uuid.uuid4()
            behind = await batches_behind(session, events, [covered, past, without_events])
        finally:
            await pool.release(session)
        assert behind == {past}

    async def test_a_batch_of_a_transaction_pending_in_the_pass_is_behind(
        self, pool: ConnectionPool
    ) -> None:
        late = await open_transaction_with_a_result(pool)
        later = await commit_results(pool, 2)
        session = await pool.acquire()
        try:
            events = await take_operation_events(session, EXCHANGE, 100)
            assert events is not None
            assert late.txid in events.pending, "the premise: running when the pass looked"
            await late.transaction.commit()  # its rows are visible now, not yet published
            behind = await batches_behind(session, events, [late.batch_id, later])
        finally:
            await pool.release(session)
            await pool.release(late.session)
        assert behind == {late.batch_id}


class RecordingPublisher(EventPublisher):
    """Takes every message as confirmed, keeping their routing keys in order."""

    def __init__(self) -> None:
        super().__init__()
        self.routing_keys: list[str] = []

    async def publish_all(self, messages: list[OutboxMessage]) -> list[BaseException | None]:
        self.routing_keys += [m.routing_key for m in messages]
        return [None] * len(messages)


async def never_down() -> None:
    return None


class TestACompletionUnderAFlood:
    async def test_goes_out_with_the_pass_that_covers_its_batch_not_after_the_flood(
        self, pool: ConnectionPool
    ) -> None:
        finished = await commit_results(pool, 3)
        session = await pool.acquire()
        try:
            await SqlOutboxRepository(session).add(
                OutboxMessage(
                    exchange=EXCHANGE,
                    routing_key="batch.order_update.completed",
                    message_id=uuid.uuid4(),
                    correlation_id=None,
                    body=json.dumps({"batch_id": str(finished)}).encode(),
                )
            )
            await session.commit()
        finally:
            await pool.release(session)
        await commit_results(pool, 4)  # the flood: more than the pass below takes
        publisher = RecordingPublisher()
        relay = OutboxRelay(
            pool,
            DatabaseAvailability(never_down),
            publisher,
            exchange=EXCHANGE,
            batch_size=5,
            poll_seconds=1,
        )

        assert await relay.relay_once(), "the premise: events were left for the next pass"

        assert publisher.routing_keys[-1] == "batch.order_update.completed"
        assert len(publisher.routing_keys) == 3 + 1, "its operations' events, then it"


class TestALongTransaction:
    async def test_its_rows_are_read_when_it_commits_and_it_alone_is_pending_meanwhile(
        self, pool: ConnectionPool
    ) -> None:
        held = await open_transaction_with_a_result(pool)
        relay = await pool.acquire()
        try:
            for _ in range(20):  # transactions that begin after it and commit before it
                await commit_results(pool, 1)
            early = await take_all(relay, 100)
            horizon, pending, _ = await position(relay)
            assert len(early) == 20
            assert held.txid in pending
            assert len(pending) <= 3, f"only transactions running at a moment, not {pending}"
            assert horizon > held.txid

            await held.transaction.commit()
            late = await take_all(relay, 100)
            _, pending, _ = await position(relay)
        finally:
            await pool.release(held.session)
            await pool.release(relay)
        assert len(late) == 1, "the late row once, nothing of the others again"
        assert str(operation_event_id(held.batch_id, 0)) in late[0]
        assert held.txid not in pending

    async def test_its_rolled_back_rows_are_never_read_and_it_leaves_the_pending_set(
        self, pool: ConnectionPool
    ) -> None:
        held = await open_transaction_with_a_result(pool)
        relay = await pool.acquire()
        try:
            await commit_results(pool, 1)
            assert len(await take_all(relay, 100)) == 1
            assert held.txid in (await position(relay))[1]
            await held.transaction.rollback()
            await commit_results(pool, 1)
            assert len(await take_all(relay, 100)) == 1
            assert held.txid not in (await position(relay))[1]
        finally:
            await pool.release(held.session)
            await pool.release(relay)


class TestAnIdleRelay:
    async def test_does_not_write_its_position_when_there_is_nothing_to_publish(
        self, pool: ConnectionPool
    ) -> None:
        await commit_results(pool, 1)
        relay = await pool.acquire()
        try:
            assert len(await take_all(relay, 100)) == 1
            before = await position(relay)
            await commit_results(pool, 0)  # other transactions move the snapshot on
            assert await take_all(relay, 100) == []
            assert await position(relay) == before
        finally:
            await pool.release(relay)


class TestTheReadSide:
    async def test_events_past_the_position_are_unsent_until_a_pass_publishes_them(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        batch_id = await commit_results(pool, 2)
        engine = create_engine(database_url, pool_size=1)
        relay = await pool.acquire()
        try:
            async with engine.connect() as conn:
                unsent, _ = await backlog(conn)
                waiting = await batch_events(conn, batch_id, 2)
            assert unsent == 2
            assert sorted(waiting) == sorted(operation_event_id(batch_id, i) for i in (0, 1))
            assert all(record.sent_at is None for [record] in waiting.values())

            assert len(await take_all(relay, 100)) == 2
            async with engine.connect() as conn:
                assert await backlog(conn) == (0, 0.0)
                assert await batch_events(conn, batch_id, 2) == {}, "published: none waiting"
        finally:
            await pool.release(relay)
            await engine.dispose()
