"""The fair-share decision: an actor over its share is deferred while others may wait, a
redelivery never is, and an actor alone in the queue is let through after one lap."""

from __future__ import annotations

import pytest

from consumer.config import Settings
from consumer.service_layer.fair_share import (
    MAX_SOLO_SECONDS,
    MIN_SOLO_SECONDS,
    SOLO_LAPS,
    Deferral,
    FairShare,
)
from consumer.service_layer.intake import peek_actor

A, B = 3, 4


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def running(fair: FairShare, actor: int, count: int) -> None:
    for _ in range(count):
        assert fair.decide(actor, redelivered=False) is None
        fair.started(actor)


class TestShare:
    def test_an_actor_runs_up_to_its_share_then_is_deferred(self) -> None:
        fair = FairShare(2)
        running(fair, A, 2)
        assert isinstance(fair.decide(A, redelivered=False), Deferral)
        assert fair.deferrals == 1

    def test_another_actor_under_its_share_runs_beside_it(self) -> None:
        fair = FairShare(2)
        running(fair, A, 2)
        assert fair.decide(B, redelivered=False) is None

    def test_a_finished_batch_frees_its_place(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        fair.finished(A)
        assert fair.running(A) == 0
        assert fair.decide(A, redelivered=False) is None

    def test_a_redelivery_is_never_deferred_its_attempts_are_spent_already(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        assert fair.decide(A, redelivered=True) is None

    def test_a_request_without_a_valid_actor_is_never_deferred(self) -> None:
        fair = FairShare(1)
        fair.started(None)
        assert fair.decide(None, redelivered=False) is None
        assert fair.decide(None, redelivered=False) is None

    def test_no_share_means_nothing_is_deferred(self) -> None:
        fair = FairShare(None)
        running(fair, A, 50)
        assert fair.decide(A, redelivered=False) is None

    def test_each_deferral_gets_a_lap_of_its_own(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        first, second = fair.decide(A, redelivered=False), fair.decide(A, redelivered=False)
        assert first is not None
        assert second is not None
        assert first.lap != second.lap


class TestAnActorAlone:
    def test_a_lap_with_nobody_elses_batch_lets_the_actor_run_over_its_share(self) -> None:
        clock = Clock()
        fair = FairShare(1, clock=clock)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        clock.now += 0.01
        assert fair.decide(A, redelivered=False, lap=deferral.lap) is None
        assert fair.decide(A, redelivered=False) is None, "alone: no more deferrals for now"

    def test_alone_lasts_some_laps_then_the_next_lap_looks_again(self) -> None:
        clock = Clock()
        fair = FairShare(1, clock=clock)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        clock.now += 1.0  # a one-second lap
        assert fair.decide(A, redelivered=False, lap=deferral.lap) is None
        clock.now += SOLO_LAPS * 1.0 - 0.01
        assert fair.decide(A, redelivered=False) is None
        clock.now += 0.02
        assert fair.decide(A, redelivered=False) is not None

    @pytest.mark.parametrize(
        ("lap_seconds", "alone_seconds"),
        [(0.0001, MIN_SOLO_SECONDS), (100.0, MAX_SOLO_SECONDS)],
    )
    def test_alone_is_bounded(self, lap_seconds: float, alone_seconds: float) -> None:
        clock = Clock()
        fair = FairShare(1, clock=clock)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        clock.now += lap_seconds
        fair.decide(A, redelivered=False, lap=deferral.lap)
        clock.now += alone_seconds - 0.001
        assert fair.decide(A, redelivered=False) is None
        clock.now += 0.002
        assert fair.decide(A, redelivered=False) is not None

    def test_copies_deferred_before_running_alone_do_not_prolong_it(self) -> None:
        clock = Clock()
        fair = FairShare(1, clock=clock)
        running(fair, A, 1)
        first, second = fair.decide(A, redelivered=False), fair.decide(A, redelivered=False)
        assert first is not None
        assert second is not None
        fair.decide(A, redelivered=False, lap=first.lap)  # alone from here
        clock.now += MAX_SOLO_SECONDS + 1  # over; the queue is looked at again
        assert fair.decide(A, redelivered=False, lap=second.lap) is not None

    def test_a_lap_in_which_another_actor_came_keeps_deferring(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        running(fair, B, 1)
        assert fair.decide(A, redelivered=False, lap=deferral.lap) is not None

    def test_another_actor_arriving_ends_being_alone(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        fair.decide(A, redelivered=False, lap=deferral.lap)
        assert fair.decide(A, redelivered=False) is None
        running(fair, B, 1)
        assert fair.decide(A, redelivered=False) is not None

    def test_newly_published_requests_end_being_alone(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        fair.decide(A, redelivered=False, lap=deferral.lap)
        assert fair.decide(A, redelivered=False) is None, "alone"
        fair.newcomers()
        assert fair.decide(A, redelivered=False) is not None

    def test_laps_opened_before_newcomers_do_not_count_as_having_looked_at_them(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        deferral = fair.decide(A, redelivered=False)
        assert deferral is not None
        fair.newcomers()
        assert fair.decide(A, redelivered=False, lap=deferral.lap) is not None

    def test_a_lap_the_consumer_never_opened_tells_nothing(self) -> None:
        fair = FairShare(1)
        running(fair, A, 1)
        assert fair.decide(A, redelivered=False, lap="another-consumer-1") is not None
        assert fair.decide(A, redelivered=False) is not None


class TestPeek:
    def test_the_actor_is_read_wherever_it_stands_in_the_body(self) -> None:
        assert peek_actor(b'{"operations": [{"actor_id": 9}], "actor_id": 7}') == 7

    @pytest.mark.parametrize(
        "body", [b"not json", b"[]", b'{"actor_id": "7"}', b'{"actor_id": 0}', b'{"x": 1}']
    )
    def test_no_valid_actor_is_none(self, body: bytes) -> None:
        assert peek_actor(body) is None


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
