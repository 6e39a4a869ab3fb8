"""The fair-share choice: the waiting delivery of the actor with the fewest batches running
(under its share) runs next, the oldest on a tie; over-share work still runs when nothing else
waits; share None is plain FIFO. Then the asyncio scheduler around it: shutdown and a closed
channel leave held deliveries unrun."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from consumer.config import Settings
from consumer.service_layer.fair_share import FairQueue, FairScheduler
from consumer.service_layer.intake import peek_actor, peek_batch

A, B, C = 3, 4, 5


def taken(queue: FairQueue[str]) -> list[str]:
    """Everything that may run now, in the order it is granted."""
    order = []
    while (waiting := queue.take()) is not None:
        order.append(waiting.item)
    return order


def arrive(queue: FairQueue[str], *items: str) -> None:
    """Items named by actor letter and number: "A1" is actor A's first delivery."""
    for item in items:
        queue.arrive(item, {"A": A, "B": B, "C": C, "?": None}[item[0]])


class TestChoice:
    def test_the_actor_with_fewest_running_goes_first(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=4, share=2)
        arrive(queue, "A1", "A2", "A3", "A4", "B1", "B2")
        assert taken(queue) == ["A1", "B1", "A2", "B2"]

    def test_a_tie_goes_to_the_oldest_arrival(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        arrive(queue, "B1", "A1", "A2")
        assert taken(queue) == ["B1", "A1"]

    def test_a_freed_slot_goes_to_the_other_actor_waiting(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        arrive(queue, *(f"A{n}" for n in range(1, 9)))
        assert taken(queue) == ["A1", "A2"], "alone, the actor fills every slot"
        arrive(queue, "B1", "B2")
        queue.finished(A)
        assert taken(queue) == ["B1"], "B, under its share, passes A's seven older ones"
        queue.finished(A)
        assert taken(queue) == ["A3"], "B is at its share: A's oldest takes the slot"

    def test_over_share_work_runs_when_nobody_under_share_waits(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=8, share=1)
        arrive(queue, "A1", "A2", "A3", "B1", "B2")
        assert taken(queue) == ["A1", "B1", "A2", "A3", "B2"]
        assert queue.running(A) == 3

    def test_one_actors_deliveries_keep_queue_order(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        arrive(queue, *(f"A{n}" for n in range(1, 7)))
        order = taken(queue)
        for _ in range(4):
            queue.finished(A)
            order += taken(queue)
        assert order == [f"A{n}" for n in range(1, 7)]

    def test_no_share_is_arrival_order(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=3, share=None)
        arrive(queue, "A1", "A2", "A3", "B1", "C1")
        assert taken(queue) == ["A1", "A2", "A3"]
        queue.finished(A)
        assert taken(queue) == ["B1"]

    def test_deliveries_without_an_actor_have_a_lane_of_their_own(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        arrive(queue, "A1", "A2", "?1")
        assert taken(queue) == ["A1", "?1"]

    def test_no_more_run_than_the_slots(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        arrive(queue, "A1", "B1", "C1")
        assert taken(queue) == ["A1", "B1"]
        assert queue.waiting == 1
        assert queue.running_total == 2

    def test_a_removed_delivery_never_runs(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=1, share=1)
        arrive(queue, "A1")
        second = queue.arrive("A2", A)
        assert queue.remove(second)
        assert taken(queue) == ["A1"]
        queue.finished(A)
        assert taken(queue) == []
        assert not queue.remove(second)


class TestTakingAtOnce:
    """What the waiting room's runs use: a slot taken now or not at all."""

    def test_a_free_slot_is_taken_and_counted_for_its_actor(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        assert queue.try_take(6)
        assert queue.running(6) == 1
        assert queue.at_share() == [6]
        assert queue.try_take(6)  # over its share: nobody else waits, the slot must not idle
        assert not queue.has_free_slot()
        assert not queue.try_take(1)

    def test_no_slot_is_free_while_a_delivery_waits_in_memory(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=2, share=1)
        assert queue.try_take(A)
        arrive(queue, "B1")  # arrived while the slot was promised elsewhere
        assert not queue.has_free_slot()
        assert not queue.try_take(1)

    def test_without_fair_share_no_actor_is_at_its_share(self) -> None:
        queue: FairQueue[str] = FairQueue(slots=4, share=None)
        assert queue.try_take(6)
        assert queue.try_take(6)
        assert queue.at_share() == []


class TestScheduler:
    async def test_a_delivery_waits_for_a_freed_slot_then_runs(self) -> None:
        waiting: list[int] = []
        scheduler = FairScheduler(slots=1, share=1, on_change=waiting.append)
        assert await scheduler.turn(A, live=lambda: True)
        second = asyncio.create_task(scheduler.turn(A, live=lambda: True))
        await asyncio.sleep(0)  # let it queue up
        assert not second.done()
        assert scheduler.waiting == 1
        assert waiting[-1] == 1, "the gauge sees it waiting"
        scheduler.done(A)
        assert await asyncio.wait_for(second, 1)
        assert waiting[-1] == 0

    async def test_closing_returns_what_waits_unrun_and_refuses_later_ones(self) -> None:
        scheduler = FairScheduler(slots=1, share=1)
        assert await scheduler.turn(A, live=lambda: True)
        held = asyncio.create_task(scheduler.turn(B, live=lambda: True))
        await asyncio.sleep(0)
        scheduler.close()
        assert await asyncio.wait_for(held, 1) is False
        assert await scheduler.turn(B, live=lambda: True) is False

    async def test_a_delivery_whose_channel_closed_never_runs(self) -> None:
        scheduler = FairScheduler(slots=1, share=1)
        assert await scheduler.turn(A, live=lambda: True)
        channel_open = [True]
        stale = asyncio.create_task(scheduler.turn(A, live=lambda: channel_open[0]))
        fresh = asyncio.create_task(scheduler.turn(B, live=lambda: True))
        await asyncio.sleep(0)
        channel_open[0] = False
        scheduler.drop_stale()
        assert await asyncio.wait_for(stale, 1) is False
        assert scheduler.waiting == 1
        assert scheduler.dropped == 1
        scheduler.done(A)
        assert await asyncio.wait_for(fresh, 1)
        assert scheduler.running(A) == 0

    async def test_a_stale_delivery_reached_by_a_free_slot_gives_the_slot_on(self) -> None:
        scheduler = FairScheduler(slots=1, share=1)
        assert await scheduler.turn(A, live=lambda: True)
        channel_open = [True]
        stale = asyncio.create_task(scheduler.turn(A, live=lambda: channel_open[0]))
        fresh = asyncio.create_task(scheduler.turn(A, live=lambda: True))
        await asyncio.sleep(0)
        channel_open[0] = False
        scheduler.done(A)
        assert await asyncio.wait_for(stale, 1) is False
        assert await asyncio.wait_for(fresh, 1)
        assert scheduler.running(A) == 1
        assert scheduler.dropped == 1

    async def test_a_cancelled_wait_leaves_no_trace(self) -> None:
        scheduler = FairScheduler(slots=1, share=1)
        assert await scheduler.turn(A, live=lambda: True)
        held = asyncio.create_task(scheduler.turn(B, live=lambda: True))
        await asyncio.sleep(0)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert scheduler.waiting == 0
        scheduler.done(A)
        assert scheduler.running(B) == 0
        assert await scheduler.turn(B, live=lambda: True)


class TestPeek:
    def test_the_actor_is_read_wherever_it_stands_in_the_body(self) -> None:
        assert peek_actor(b'{"operations": [{"actor_id": 9}], "actor_id": 7}') == 7

    @pytest.mark.parametrize(
        "body", [b"not json", b"[]", b'{"actor_id": "7"}', b'{"actor_id": 0}', b'{"x": 1}']
    )
    def test_no_valid_actor_is_none(self, body: bytes) -> None:
        assert peek_actor(body) is None

    def test_a_batch_is_read_from_its_first_fields_or_else_from_the_whole_body(self) -> None:
        batch_id = uuid.uuid4()
        first = f'{{"batch_id": "{batch_id}", "actor_id": 7, "operations": [1, 2'.encode()
        assert peek_batch(first) == (batch_id, 7)  # cut short: its first fields still name it
        later = f'{{"operations": [{{"actor_id": 9}}], "actor_id": 7, "batch_id": "{batch_id}"}}'
        assert peek_batch(later.encode()) == (batch_id, 7)

    @pytest.mark.parametrize(
        "body",
        [b"not json", b'{"actor_id": 7}', b'{"batch_id": "x", "actor_id": 7}', b'{"batch_id": 1}'],
    )
    def test_without_a_valid_batch_id_and_actor_it_is_none(self, body: bytes) -> None:
        assert peek_batch(body) is None


class TestSetting:
    def test_the_default_share_is_half_the_prefetch(self) -> None:
        assert Settings(prefetch=8).fair_share_limit == 4

    def test_the_default_share_is_at_least_one(self) -> None:
        assert Settings(prefetch=1).fair_share_limit == 1

    def test_zero_turns_fair_share_off(self) -> None:
        assert Settings(fair_share=0).fair_share_limit is None

    def test_serialized_batches_keep_queue_order_without_fair_share(self) -> None:
        assert Settings(serialize_batches=True, fair_share=2).fair_share_limit is None

    def test_a_given_share_is_kept(self) -> None:
        assert Settings(fair_share=3, prefetch=8).fair_share_limit == 3

    def test_a_negative_share_is_refused_naming_the_setting(self) -> None:
        with pytest.raises(ValueError, match="fair_share"):
            Settings(fair_share=-1)

    def test_the_window_defaults_to_256_or_twice_the_prefetch_only_with_fair_share_on(
        self,
    ) -> None:
        assert Settings(prefetch=8).delivery_window == 256
        assert Settings(prefetch=200).delivery_window == 400
        assert Settings(prefetch=40000).delivery_window == 65535
        assert Settings(fair_window=1024).delivery_window == 1024
        assert Settings(prefetch=8, fair_window=1024, fair_share=0).delivery_window == 8
        assert Settings(prefetch=8, serialize_batches=True).delivery_window == 8

    def test_the_lease_is_bounded_naming_the_setting(self) -> None:
        assert Settings().fair_lease_seconds == 10.0
        with pytest.raises(ValueError, match="fair_lease_seconds"):
            Settings(fair_lease_seconds=0.5)

    def test_a_window_smaller_than_the_prefetch_is_refused_naming_both(self) -> None:
        with pytest.raises(ValueError, match=r"BATCHOPS_FAIR_WINDOW .*BATCHOPS_PREFETCH"):
            Settings(prefetch=16, fair_window=8)

    def test_the_window_does_not_matter_with_fair_share_off(self) -> None:
        assert Settings(prefetch=16, fair_window=8, fair_share=0).fair_window == 8

    def test_a_window_beyond_the_brokers_prefetch_count_is_refused(self) -> None:
        with pytest.raises(ValueError, match="fair_window"):
            Settings(fair_window=65536)
