"""How many deliveries the consumer asks the broker for, and whether fair share is on: it is
only with a window beyond the prefetch (otherwise nothing can wait, and no body is peeked)."""

from __future__ import annotations

from typing import Any

from consumer.entrypoints.rabbit import RequestConsumer
from contracts import Topology

UNUSED: Any = None  # the executor and the availability are only kept by the constructor


def consumer(prefetch: int, fair_share: int | None, window: int | None) -> RequestConsumer:
    return RequestConsumer(
        UNUSED, Topology(), prefetch, UNUSED, fair_share=fair_share, window=window
    )


def test_a_share_without_a_window_beyond_the_prefetch_leaves_fair_share_off() -> None:
    assert consumer(8, 4, None).scheduler.share is None
    assert consumer(8, 4, 8).scheduler.share is None


def test_a_window_beyond_the_prefetch_turns_the_share_on() -> None:
    assert consumer(8, 4, 1024).scheduler.share == 4


def test_without_a_share_the_window_is_ignored() -> None:
    assert consumer(8, None, 1024).scheduler.share is None
