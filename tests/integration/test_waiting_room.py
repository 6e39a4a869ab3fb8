"""The waiting room in PostgreSQL (adapters/waiting_room.py), against the real database: parked
requests are leased oldest first with the avoided actors last, never to two consumers at once,
taken over once a lease runs out, given back uncounted, and kept apart per namespace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
from sqlalchemy import select

from consumer.adapters.pg import ConnectionPool
from consumer.adapters.tables import waiting_requests
from consumer.adapters.waiting_room import SqlWaitingRoom
from consumer.service_layer.intake import Delivery
from consumer.service_layer.waiting_room import Parked, ToPark
from tests.integration.helpers import eventually, fetch, sql_waiting_room

Room = Callable[..., SqlWaitingRoom]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(database_url, size=4, command_timeout=10)
    yield pool
    await pool.close(timeout=5)


@pytest.fixture
def room(pool: ConnectionPool, namespace: str) -> Room:
    def make(namespace: str = namespace, lease_seconds: float = 10.0) -> SqlWaitingRoom:
        return sql_waiting_room(pool, namespace, lease_seconds=lease_seconds)

    return make


async def lease_end(database_url: str, parked_id: int) -> datetime:
    rows = await fetch(
        database_url,
        select(waiting_requests.c.lease_until).where(waiting_requests.c.id == parked_id),
    )
    end: datetime = rows[0][0]
    return end


def delivery(body: bytes = b"{}", **properties: object) -> Delivery:
    return Delivery(body=body, user_id="guest", **properties)  # type: ignore[arg-type]


async def park(room: SqlWaitingRoom, actor: int, body: bytes | None = None) -> uuid.UUID:
    batch_id = uuid.uuid4()
    body = body or str(batch_id).encode()
    await room.park_all([ToPark(batch_id, actor, delivery(body), "order_update")])
    return batch_id


class TestLeasing:
    async def test_the_oldest_is_leased_first_with_every_property_kept(self, room: Room) -> None:
        waiting = room()
        published = delivery(
            b'{"a": 1}',
            message_id="m-1",
            correlation_id="c-1",
            reply_to="amq.rabbitmq.reply-to",
            content_type="application/json",
            traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        )
        await waiting.park_all([ToPark(uuid.uuid4(), 7, published, "order_update")])
        await park(waiting, 8)

        first = await waiting.lease("me", avoid=[])
        assert first is not None
        assert first.actor == 7
        assert first.routing_key == "order_update"
        assert first.delivery == published  # delivery_count 0: its first run
        assert first.attempt == 1

    async def test_an_avoided_actors_requests_go_after_everyone_elses(self, room: Room) -> None:
        waiting = room()
        for _ in range(3):
            await park(waiting, 6)
        await park(waiting, 1)

        leased = await waiting.lease("me", avoid=[6])
        assert leased is not None
        assert leased.actor == 1
        # Nothing but the avoided actor's: its oldest, so that no slot idles.
        leased = await waiting.lease("me", avoid=[6])
        assert leased is not None
        assert leased.actor == 6

    async def test_nothing_waiting_leases_none_and_counts_none(self, room: Room) -> None:
        assert await room().lease("me", avoid=[]) is None
        assert await room().waiting() == 0

    async def test_competing_consumers_never_lease_the_same_request(self, room: Room) -> None:
        waiting = room()
        parked = {await park(waiting, 6) for _ in range(20)}

        leased = await asyncio.gather(*(waiting.lease(f"c{n}", avoid=[]) for n in range(30)))

        ids = [p.id for p in leased if p is not None]
        assert len(ids) == len(set(ids)) == len(parked)
        assert await waiting.waiting() == 0


class TestLeases:
    async def test_a_lease_not_renewed_runs_out_and_another_takes_it_counted(
        self, room: Room
    ) -> None:
        waiting = room(lease_seconds=1)
        await park(waiting, 6)
        dead = await waiting.lease("dead consumer", avoid=[])
        assert dead is not None
        assert await waiting.lease("live", avoid=[]) is None  # leased: not free

        taken = await _eventually_leased(waiting, "live")

        assert taken.id == dead.id
        assert taken.attempt == 2  # the dead consumer's run counts
        assert await waiting.renew("dead consumer", [dead.id]) == set()

    async def test_renewing_moves_the_end_of_the_lease_on(
        self, room: Room, database_url: str
    ) -> None:
        waiting = room(lease_seconds=30)
        await park(waiting, 6)
        mine = await waiting.lease("me", avoid=[])
        assert mine is not None
        first_end = await lease_end(database_url, mine.id)

        assert await waiting.renew("me", [mine.id]) == {mine.id}
        assert await waiting.renew("someone else", [mine.id]) == set()

        assert await lease_end(database_url, mine.id) > first_end
        assert await waiting.lease("other", avoid=[]) is None

    async def test_given_back_it_waits_again_its_run_uncounted(self, room: Room) -> None:
        waiting = room()
        await park(waiting, 6)
        mine = await waiting.lease("me", avoid=[])
        assert mine is not None

        await waiting.give_back("someone else", mine.id)  # not theirs: nothing happens
        assert await waiting.lease("other", avoid=[]) is None
        await waiting.give_back("me", mine.id)

        again = await waiting.lease("other", avoid=[])
        assert again is not None
        assert again.id == mine.id
        assert again.attempt == 1

    async def test_a_removed_request_is_gone(self, room: Room) -> None:
        waiting = room()
        await park(waiting, 6)
        mine = await waiting.lease("me", avoid=[])
        assert mine is not None
        await waiting.remove([mine.id])
        await waiting.give_back("me", mine.id)
        assert await waiting.lease("me", avoid=[]) is None


class TestSettling:
    async def test_settled_requests_leave_with_the_next_lease(self, room: Room) -> None:
        waiting = room()
        await park(waiting, 6)
        await park(waiting, 6)
        done = await waiting.lease("me", avoid=[])
        assert done is not None

        following = await waiting.lease("me", avoid=[], settled=[done.id])

        assert following is not None
        assert following.id != done.id
        await waiting.give_back("me", following.id)
        assert await waiting.waiting() == 1  # the settled one is gone, the other waits
        last = await waiting.lease("me", avoid=[], settled=[done.id])
        assert last is not None
        assert last.id == following.id


class TestParking:
    async def test_many_requests_park_in_one_go_each_once(self, room: Room) -> None:
        waiting = room()
        same = ToPark(uuid.uuid4(), 6, delivery(b'{"same": 1}'), "order_update")
        others = [ToPark(uuid.uuid4(), 1, delivery(), "order_update") for _ in range(49)]
        await waiting.park_all([same, *others, same])
        assert await waiting.waiting() == 50

    async def test_the_same_request_parked_twice_waits_once(self, room: Room) -> None:
        waiting = room()
        batch_id = uuid.uuid4()
        for _ in range(2):  # a crash before the ack: the broker hands it out again
            await waiting.park_all([ToPark(batch_id, 6, delivery(b'{"same": 1}'), "order_update")])
        assert await waiting.waiting() == 1

    async def test_a_different_body_under_the_same_batch_id_waits_too(self, room: Room) -> None:
        # It must reach the executor, which refuses it (CONFLICT) rather than lose it.
        waiting = room()
        batch_id = uuid.uuid4()
        await waiting.park_all([ToPark(batch_id, 6, delivery(b'{"one": 1}'), "order_update")])
        await waiting.park_all([ToPark(batch_id, 6, delivery(b'{"two": 2}'), "order_update")])
        assert await waiting.waiting() == 2

    async def test_namespaces_sharing_a_database_keep_their_requests_apart(
        self, room: Room, namespace: str
    ) -> None:
        ours, theirs = room(), room(namespace=f"{namespace}-other")
        await park(theirs, 6)
        assert await ours.lease("me", avoid=[]) is None
        assert await ours.waiting() == 0
        assert await theirs.waiting() == 1
        leased = await theirs.lease("them", avoid=[])
        assert leased is not None
        await theirs.remove([leased.id])


async def _eventually_leased(waiting: SqlWaitingRoom, owner: str) -> Parked:
    taken: Parked | None = None

    async def leased() -> bool:
        nonlocal taken
        taken = await waiting.lease(owner, avoid=[])
        return taken is not None

    await eventually(leased, what="the request leased again")
    assert taken is not None
    return taken
