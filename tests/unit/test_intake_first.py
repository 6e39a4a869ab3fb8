"""While a flood is on its way into the waiting room, parked requests fill only the share of the
slots (entrypoints/parking.py): the rest of the CPU takes the flood in, so that other actors'
requests queued behind it reach the room sooner. At least the share always runs."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Collection, Sequence
from typing import Any, cast

import pytest

from consumer.adapters.dead_letter_copies import DeadLetterCopies
from consumer.entrypoints.parking import INTAKE_BACKLOG, ParkedRequests
from consumer.entrypoints.rabbit import RequestConsumer
from consumer.service_layer.batch_run import Disposition
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.fair_share import FairScheduler
from consumer.service_layer.intake import Delivery
from consumer.service_layer.waiting_room import Parked, ToPark, WaitingRoom
from contracts import Topology

SLOTS, SHARE = 8, 4
FLOODER, OTHER = 1, 2
UNUSED: Any = None  # the database's availability: nothing here asks for it


class RoomWithASlowInsert(WaitingRoom):
    """The waiting room in memory; an insert waits until `inserts` is set."""

    def __init__(self, waiting: int) -> None:
        self._ids = itertools.count(1)
        self._waiting = [self._parked(FLOODER) for _ in range(waiting)]
        self.inserting = asyncio.Event()
        self.inserts = asyncio.Event()
        self.refuses = False  # inserts fail (a value the database refuses)
        self.removals = 0  # transactions removing settled requests alone (not with a lease)

    def _parked(self, actor: int) -> Parked:
        return Parked(next(self._ids), actor, "", Delivery(body=b"{}", user_id="svc"))

    async def park_all(self, requests: Sequence[ToPark]) -> None:
        self.inserting.set()
        await self.inserts.wait()
        if self.refuses:
            raise ValueError("refused")
        self._waiting += [self._parked(request.actor) for request in requests]

    async def lease(
        self, owner: str, avoid: Collection[int], settled: Collection[int] = ()
    ) -> Parked | None:
        if not self._waiting:
            return None
        chosen = next((p for p in self._waiting if p.actor not in avoid), self._waiting[0])
        self._waiting.remove(chosen)
        return chosen

    async def renew(self, owner: str, ids: Collection[int]) -> set[int]:
        return set(ids)

    async def give_back(self, owner: str, parked_id: int) -> None:
        raise AssertionError("nothing is given back here")

    async def remove(self, ids: Collection[int]) -> None:
        self.removals += 1

    async def waiting(self) -> int:
        return len(self._waiting)


class BatchesThatWait:
    """An executor whose batches run until `ends` is set, or `end_one` lets one end."""

    def __init__(self) -> None:
        self.ends = asyncio.Event()
        self._one_may_end = asyncio.Semaphore(0)
        self.started = 0
        self._changed = asyncio.Condition()

    async def handle(self, delivery: Delivery) -> Disposition:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        all_end = asyncio.ensure_future(self.ends.wait())
        one_ends = asyncio.ensure_future(self._one_may_end.acquire())
        await asyncio.wait({all_end, one_ends}, return_when=asyncio.FIRST_COMPLETED)
        all_end.cancel()
        one_ends.cancel()
        return Disposition.ACK

    def end_one(self) -> None:
        self._one_may_end.release()

    async def until_started(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.started >= count)


@pytest.fixture
def executor() -> BatchesThatWait:
    return BatchesThatWait()


@pytest.fixture
def room() -> RoomWithASlowInsert:
    return RoomWithASlowInsert(waiting=20)


@pytest.fixture
def scheduler() -> FairScheduler:
    return FairScheduler(SLOTS, SHARE)


def parking_with(
    room: WaitingRoom,
    executor: BatchesThatWait,
    scheduler: FairScheduler | None = None,
    poll_seconds: float = 0.5,
) -> ParkedRequests:
    return ParkedRequests(
        room,
        scheduler or FairScheduler(SLOTS, SHARE),
        cast("BatchExecutor", executor),
        DeadLetterCopies(Topology()),
        delivery_limit=5,
        lease_seconds=10,
        poll_seconds=poll_seconds,
    )


async def on_their_way(
    parking: ParkedRequests, room: RoomWithASlowInsert, count: int
) -> list[asyncio.Task[None]]:
    """`count` requests parked by deliveries, their insert held by `room`."""
    delivery = Delivery(body=b"{}", user_id="svc")
    parks = [
        asyncio.create_task(parking.park(delivery, (uuid.uuid4(), FLOODER), ""))
        for _ in range(count)
    ]
    await asyncio.wait_for(room.inserting.wait(), 5)
    return parks


async def lease_what_may_run(parking: ParkedRequests) -> None:
    # The step `fill_slots` takes on each wake-up (a slot freed, a request parked): called
    # directly, it returns once nothing more may be leased.
    await parking._fill_free_slots()


async def test_while_a_flood_is_taken_in_leases_fill_only_the_share(
    executor: BatchesThatWait, room: RoomWithASlowInsert
) -> None:
    parking = parking_with(room, executor)
    parks = await on_their_way(parking, room, INTAKE_BACKLOG)

    await lease_what_may_run(parking)
    assert parking.leased == SHARE

    room.inserts.set()  # the flood is in
    await asyncio.wait_for(asyncio.gather(*parks), 5)
    await lease_what_may_run(parking)
    assert parking.leased == SLOTS
    await finish(parking, room, executor, parks)


async def test_a_backlog_under_the_threshold_holds_no_slot(
    executor: BatchesThatWait, room: RoomWithASlowInsert
) -> None:
    parking = parking_with(room, executor)
    parks = await on_their_way(parking, room, INTAKE_BACKLOG - 1)

    await lease_what_may_run(parking)
    assert parking.leased == SLOTS
    await finish(parking, room, executor, parks)


async def test_the_share_keeps_running_through_a_flood_that_never_ends(
    executor: BatchesThatWait, room: RoomWithASlowInsert, scheduler: FairScheduler
) -> None:
    parking = parking_with(room, executor, scheduler)
    parks = await on_their_way(parking, room, 4 * INTAKE_BACKLOG)
    await lease_what_may_run(parking)
    assert parking.leased == SHARE

    executor.ends.set()  # the batches in hand end while the insert still waits
    for _ in range(100):  # as `fill_slots` does each time a slot frees
        await asyncio.wait_for(lease_what_may_run(parking), 5)
        assert scheduler.running_total <= SHARE
        if parking.leased >= 3 * SHARE:
            break
        await asyncio.sleep(0)  # the ended runs give their slots back
    assert parking.leased >= 3 * SHARE
    await finish(parking, room, executor, parks)


async def test_a_flood_that_could_not_be_stored_frees_the_held_slots_at_once(
    executor: BatchesThatWait, room: RoomWithASlowInsert, scheduler: FairScheduler
) -> None:
    # No poll to fall back on: only wake-ups fill the slots.
    parking = parking_with(room, executor, scheduler, poll_seconds=60)
    filling = asyncio.create_task(parking.fill_slots())
    parks = await on_their_way(parking, room, INTAKE_BACKLOG)
    scheduler.on_slot_free()  # as when a batch ends
    await asyncio.wait_for(executor.until_started(SHARE), 5)
    assert parking.leased == SHARE

    room.refuses = True
    room.inserts.set()
    refused = await asyncio.gather(*parks, return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in refused)
    await asyncio.wait_for(executor.until_started(SLOTS), 5)

    parking.stop()
    executor.ends.set()
    await asyncio.wait_for(asyncio.gather(filling, *parking.runs), 5)


async def test_a_delivery_never_starts_before_its_own_actors_parked_requests(
    executor: BatchesThatWait,
) -> None:
    room = RoomWithASlowInsert(waiting=0)
    consumer = RequestConsumer(
        cast("BatchExecutor", executor),
        Topology(),
        SLOTS,
        UNUSED,
        fair_share=SHARE,
        window=256,
        waiting_room=room,
    )
    parking = consumer.parking
    assert parking is not None
    parks = await on_their_way(parking, room, INTAKE_BACKLOG)
    room.inserts.set()
    await asyncio.wait_for(asyncio.gather(*parks), 5)
    await lease_what_may_run(parking)
    assert parking.leased == SLOTS
    executor.ends.set()  # the flood's actor drops under its share, requests of its own parked
    await asyncio.wait_for(asyncio.gather(*parking.runs), 5)

    assert consumer.scheduler.has_free_slot()
    assert not consumer._starts_now(FLOODER)
    assert consumer._starts_now(OTHER)  # under its share, nothing of its own waiting
    await asyncio.wait_for(until_the_room_is_found_empty(parking), 5)
    assert consumer._starts_now(FLOODER)


async def until_the_room_is_found_empty(parking: ParkedRequests) -> None:
    while parking.known:
        await lease_what_may_run(parking)
        await asyncio.gather(*parking.runs)


async def finish(
    parking: ParkedRequests,
    room: RoomWithASlowInsert,
    executor: BatchesThatWait,
    parks: list[asyncio.Task[None]],
) -> None:
    """End the insert and the batches, and wait for every task the test started."""
    room.inserts.set()
    executor.ends.set()
    await asyncio.wait_for(asyncio.gather(*parks, *parking.runs), 5)


async def test_batches_ending_while_a_flood_is_taken_in_are_removed_with_the_next_lease(
    executor: BatchesThatWait, room: RoomWithASlowInsert, scheduler: FairScheduler
) -> None:
    parking = parking_with(room, executor, scheduler)
    await lease_what_may_run(parking)  # before the flood: every slot
    parks = await on_their_way(parking, room, INTAKE_BACKLOG)

    for _ in range(SLOTS - SHARE):  # down to the share: no lease, and no removal alone
        await one_batch_ends(parking, executor)
        await lease_what_may_run(parking)
    assert parking.leased == SLOTS
    assert room.removals == 0
    await one_batch_ends(parking, executor)  # under the share: a lease, taking them with it
    await lease_what_may_run(parking)
    assert parking.leased == SLOTS + 1
    assert room.removals == 0
    await finish(parking, room, executor, parks)


async def one_batch_ends(parking: ParkedRequests, executor: BatchesThatWait) -> None:
    runs = parking.runs
    executor.end_one()
    await asyncio.wait_for(asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED), 5)
