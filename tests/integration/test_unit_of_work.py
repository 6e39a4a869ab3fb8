"""The PostgreSQL unit of work's round-trip savers, against the real database: deferred saves
that ride in the next statement, chained commits that keep the connection, and the pool that
replaces connections once one breaks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text

from consumer.adapters.db_faults import classify
from consumer.adapters.pg import ConnectionPool, Session, Statement
from consumer.adapters.unit_of_work import SqlUnitOfWork
from consumer.domain.batch import BatchState
from consumer.domain.model import Order, OrderStatus
from consumer.service_layer.faults import DatabaseUnavailable, Fault
from consumer.service_layer.unit_of_work import OutboxMessage, StoredBatch
from contracts import BatchStatus, Mode, Outcome
from tests.integration.helpers import eventually, order


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(database_url, size=3, command_timeout=10)
    yield pool
    await pool.close(timeout=5)


def accepted(found: Order | None, notes: str) -> Order:
    assert found is not None
    return Order(
        id=found.id,
        client_id=found.client_id,
        professional_id=found.professional_id,
        professional_user_id=found.professional_user_id,
        service_id=found.service_id,
        status=OrderStatus.ACCEPTED,
        notes=notes,
        price=found.price,
    )


async def claim_batch(uow: SqlUnitOfWork) -> uuid.UUID:
    batch_id = uuid.uuid4()
    now = datetime.now(UTC)
    state = BatchState(
        batch_id=batch_id,
        operation_type="order_update",
        actor_id=1,
        mode=Mode.CONTINUE,
        total=2,
        created_at=now,
        status=BatchStatus.PROCESSING,
        started_at=now,
    )
    async with uow:
        await uow.batches.claim(StoredBatch(state, None, b"f" * 32, None, None))
        await uow.commit()
    return batch_id


async def record(uow: SqlUnitOfWork, batch_id: uuid.UUID, index: int, resource_id: int) -> None:
    message = OutboxMessage("ex", f"operation.{index}", uuid.uuid4(), None, b"{}")
    await uow.batches.add_result(
        batch_id, index, resource_id, Outcome.SUCCEEDED, 200, None, b"{}", message, cancellable=True
    )


class TestDeferredSaves:
    async def test_a_save_rides_in_the_recording_statement_and_commits_with_it(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        uow = SqlUnitOfWork(pool)
        batch_id = await claim_batch(uow)
        async with uow:
            found = await uow.marketplace.get_order_for_update(3)
            await uow.marketplace.save_order(accepted(found, "ride along"))
            await record(uow, batch_id, 0, 3)
            await uow.commit()

        saved = await order(database_url, 3)
        assert (saved.status, saved.notes) == ("accepted", "ride along")
        async with uow:
            assert [r.index for r in await uow.batches.results(batch_id)] == [0]

    async def test_a_save_runs_before_any_other_statement_that_could_see_it(
        self, pool: ConnectionPool
    ) -> None:
        uow = SqlUnitOfWork(pool)
        async with uow:
            found = await uow.marketplace.get_order_for_update(3)
            await uow.marketplace.save_order(accepted(found, "seen by the next read"))
            again = await uow.marketplace.get_order_for_update(3)
            assert again is not None
            assert again.notes == "seen by the next read"

    async def test_a_save_commits_even_when_no_statement_follows_it(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        uow = SqlUnitOfWork(pool)
        async with uow:
            found = await uow.marketplace.get_order_for_update(6)
            await uow.marketplace.save_order(accepted(found, "alone"))
            await uow.commit()

        assert (await order(database_url, 6)).notes == "alone"

    async def test_a_rollback_discards_a_deferred_save(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        before = await order(database_url, 9)
        uow = SqlUnitOfWork(pool)
        async with uow:
            found = await uow.marketplace.get_order_for_update(9)
            await uow.marketplace.save_order(accepted(found, "never"))
            await uow.rollback()
            await uow.commit()

        assert (await order(database_url, 9)).notes == before.notes


class TestChainedCommits:
    async def test_a_chained_commit_keeps_the_connection_for_the_next_transaction(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        uow = SqlUnitOfWork(pool)
        batch_id = await claim_batch(uow)
        pids = []
        for index, order_id in enumerate((3, 6)):
            async with uow:
                pids.append(await backend_pid(uow))
                found = await uow.marketplace.get_order_for_update(order_id)
                await uow.marketplace.save_order(accepted(found, f"chained {index}"))
                await record(uow, batch_id, index, order_id)
                await uow.commit(chain=index == 0)
            if index == 0:
                async with SqlUnitOfWork(pool) as other:
                    between = await backend_state(other, pids[0])
        await uow.close()

        assert between == "idle in transaction", "the chained commit opened the next one"
        assert pids[0] == pids[1], "the second transaction ran on the first one's connection"
        assert (await order(database_url, 3)).notes == "chained 0"
        assert (await order(database_url, 6)).notes == "chained 1"

    async def test_a_failure_after_a_chained_commit_gives_the_connection_back(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        uow = SqlUnitOfWork(pool)
        async with uow:
            found = await uow.marketplace.get_order_for_update(3)
            await uow.marketplace.save_order(accepted(found, "committed"))
            await uow.commit(chain=True)

        async def fail_midway() -> None:
            async with uow:
                found = await uow.marketplace.get_order_for_update(3)
                await uow.marketplace.save_order(accepted(found, "rolled back"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await fail_midway()

        assert (await order(database_url, 3)).notes == "committed"
        async with uow:  # a fresh connection, usable as ever
            assert await uow.marketplace.get_order_for_update(3) is not None


class TestBrokenConnections:
    async def test_after_a_connection_dies_the_next_unit_of_work_gets_a_working_one(
        self, pool: ConnectionPool
    ) -> None:
        uow = SqlUnitOfWork(pool)
        async with uow:
            idle_pid = await backend_pid(uow)  # back in the pool afterwards, idle
        async with uow:
            victim = await backend_pid(uow)
            async with SqlUnitOfWork(pool) as other:
                await kill_backends(other, idle_pid, victim)
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)) as err:
                await uow.marketplace.get_order_for_update(3)
            assert classify(err.value) is Fault.LOST

        async with uow:
            assert await uow.marketplace.get_order_for_update(3) is not None
            assert await backend_pid(uow) not in {idle_pid, victim}

    async def test_bad_arguments_are_not_mistaken_for_a_transient_fault(
        self, pool: ConnectionPool
    ) -> None:
        uow = SqlUnitOfWork(pool)
        async with uow:
            with pytest.raises(asyncpg.DataError, match="out of int32 range") as err:
                await uow.marketplace.get_order_for_update(2**40)

        assert classify(err.value) is Fault.BUG

    async def test_a_connection_that_broke_during_its_commit_is_never_handed_out_again(
        self, pool: ConnectionPool, database_url: str
    ) -> None:
        """The server ends the session while the COMMIT is in flight: the connection is left
        half-way through the exchange, and reusing it would fail with asyncpg's 'another
        operation is in progress' instead of working."""
        uow = SqlUnitOfWork(pool)
        async with uow:
            victim = await backend_pid(uow)
            found = await uow.marketplace.get_order_for_update(3)
            await uow.marketplace.save_order(accepted(found, "never committed"))
            await uow.flush()
            async with SqlUnitOfWork(pool) as other:
                await kill_backends(other, victim)
            with pytest.raises(Exception) as err:  # noqa: PT011 - which one depends on timing
                await uow.commit()
        assert classify(err.value) is Fault.LOST

        for _ in range(3):  # every connection the pool hands out now works
            async with uow:
                assert await backend_pid(uow) != victim
                assert await uow.marketplace.get_order_for_update(3) is not None
        assert (await order(database_url, 3)).notes != "never committed"

    async def test_a_commit_cut_short_by_the_command_timeout_does_not_poison_the_pool(
        self, database_url: str
    ) -> None:
        """A COMMIT that outlives the command timeout leaves asyncpg's protocol waiting for
        its answer: that connection must be thrown away, or the next unit of work to get it
        fails with 'cannot switch to state …; another operation is in progress'."""
        async with SqlUnitOfWork(ConnectionPool(database_url, size=1, command_timeout=5)) as setup:
            await setup_session(setup).execute(Statement(text(SLOW_COMMIT_SCHEMA)))
            await setup.commit()
        pool = ConnectionPool(database_url, size=1, command_timeout=0.3)
        try:
            session = await pool.acquire()
            await session.execute(Statement(text("INSERT INTO slow_commit VALUES (1)")))
            with pytest.raises(TimeoutError):
                await session.commit()  # the deferred trigger sleeps 2 s at COMMIT
            await pool.release(session)

            again = await pool.acquire()  # the pool's only connection, or a fresh one
            try:
                assert await again.fetchval(Statement(text("SELECT 1"))) == 1
            finally:
                await pool.release(again)
        finally:
            await pool.close(timeout=5)

    async def test_an_unreachable_database_is_unavailable_to_units_of_work_and_probes(
        self,
    ) -> None:
        nowhere = ConnectionPool(
            "postgresql+asyncpg://postgres@127.0.0.1:1/none", size=1, command_timeout=1
        )
        try:
            with pytest.raises(DatabaseUnavailable, match="Connect call failed") as err:
                await nowhere.acquire()
            assert classify(err.value) is Fault.UNREACHABLE
            with pytest.raises(DatabaseUnavailable, match="does not answer"):
                await nowhere.probe()
        finally:
            await nowhere.close(timeout=1)


SLOW_COMMIT_SCHEMA = """
CREATE TABLE slow_commit (x int);
CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS
  'BEGIN PERFORM pg_sleep(2); RETURN NULL; END';
CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON slow_commit
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_at_commit();
"""


def setup_session(uow: SqlUnitOfWork) -> Session:
    return uow._require_session()


async def backend_pid(uow: SqlUnitOfWork) -> int:
    session = uow._require_session()
    return int(await session._connection.fetchval("SELECT pg_backend_pid()"))


async def backend_state(uow: SqlUnitOfWork, pid: int) -> str:
    session = uow._require_session()
    query = "SELECT state FROM pg_stat_activity WHERE pid = $1"
    return str(await session._connection.fetchval(query, pid))


async def kill_backends(uow: SqlUnitOfWork, *pids: int) -> None:
    session = uow._require_session()
    await session._connection.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM unnest($1::int[]) AS pid", list(pids)
    )


class TestShutdown:
    async def test_a_unit_of_work_ending_while_the_pool_closes_lets_the_close_finish(
        self, database_url: str
    ) -> None:
        pool = ConnectionPool(database_url, size=2, command_timeout=10)
        uow = SqlUnitOfWork(pool)
        await uow.__aenter__()
        assert await uow.marketplace.get_actor(1) is not None
        connections = pool._pool  # asyncpg's pool, which the close waits on
        closing = asyncio.create_task(pool.close(timeout=30))

        async def close_begun() -> bool:
            return bool(connections.is_closing())

        await eventually(close_begun, timeout=5, what="the pool's close to begin")
        assert not closing.done(), "the close must wait for the connection in use"

        await uow.__aexit__(None, None, None)

        await asyncio.wait_for(closing, timeout=5)  # not the 30 s of a connection never returned
        with pytest.raises(DatabaseUnavailable, match="closed") as err:
            await pool.acquire()
        assert classify(err.value) is Fault.UNREACHABLE
