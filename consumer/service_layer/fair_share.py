"""Fair share between actors (docs/contract.md, "Guarantees"): which of the deliveries in hand
runs when a slot frees, so that one actor's flood does not starve the others.

The broker hands a consumer a window of deliveries (more than it runs at once); they wait here,
unacknowledged, in one FIFO lane per actor. Holding a delivery spends no delivery attempt: the
quorum queue only counts one when a delivery comes back. When a slot frees, the waiting delivery
of the actor with the fewest batches running among those under their share runs (the oldest
first on a tie); if every waiting delivery's actor is at or over its share, the oldest runs
anyway, so that an actor alone uses every slot.

Counts are per consumer process: free per batch (a count in PostgreSQL would be a query per
delivery). With N competing consumers an actor may have up to N x share batches running.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
# A delivery without a valid actor_id (it will be refused) gets a lane of its own.
NO_ACTOR = None


@dataclass(eq=False, slots=True)
class Waiting(Generic[T]):
    item: T
    actor: int | None
    arrival: int


class FairQueue(Generic[T]):
    """The choice alone, without asyncio: deliveries wait in lanes, `take` picks the next one.

    `share` None: fair share is off, and deliveries run in arrival order."""

    def __init__(self, slots: int, share: int | None) -> None:
        self._slots = slots
        self._share = share
        self._lanes: dict[int | None, deque[Waiting[T]]] = {}
        self._running: Counter[int | None] = Counter()
        self._arrivals = itertools.count()
        # The most batches that ran at once (observability, and tests).
        self.busiest = 0

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def running_total(self) -> int:
        return self._running.total()

    def running(self, actor: int | None) -> int:
        return self._running[actor]

    def has_free_slot(self) -> bool:
        """True when a batch could start now without overtaking one that waits."""
        return self._running.total() < self._slots and not self._lanes

    def try_take(self, actor: int | None) -> bool:
        """Count a batch of `actor` as running now if `has_free_slot()`; False otherwise."""
        if not self.has_free_slot():
            return False
        self._running[actor] += 1
        self.busiest = max(self.busiest, self._running.total())
        return True

    def at_share(self) -> list[int]:
        """The actors with their share or more running (whose waiting batches go last)."""
        share = self._share
        if share is None:
            return []
        return [a for a, n in self._running.items() if a is not None and n >= share]

    def arrive(self, item: T, actor: int | None) -> Waiting[T]:
        waiting = Waiting(item, actor, next(self._arrivals))
        self._lanes.setdefault(actor, deque()).append(waiting)
        return waiting

    def take(self) -> Waiting[T] | None:
        """The delivery to run now, counted as running (call `finished` once it is done); None
        while every slot is busy or nothing waits."""
        if self._running.total() >= self._slots or not self._lanes:
            return None
        heads = [lane[0] for lane in self._lanes.values()]
        under = [
            h for h in heads if self._share is not None and self._running[h.actor] < self._share
        ]
        if under:
            chosen = min(under, key=lambda h: (self._running[h.actor], h.arrival))
        else:
            # Nobody under their share waits (or fair share is off): the slot must not idle.
            chosen = min(heads, key=lambda h: h.arrival)
        self._pop(chosen)
        self._running[chosen.actor] += 1
        self.busiest = max(self.busiest, self._running.total())
        return chosen

    def finished(self, actor: int | None) -> None:
        self._running[actor] -= 1
        if self._running[actor] <= 0:
            del self._running[actor]

    def remove(self, waiting: Waiting[T]) -> bool:
        """Forget a delivery that still waits; False if it was taken already."""
        lane = self._lanes.get(waiting.actor)
        if lane is None or waiting not in lane:
            return False
        lane.remove(waiting)
        if not lane:
            del self._lanes[waiting.actor]
        return True

    def drain(self, keep: Callable[[T], bool] = lambda _: False) -> list[T]:
        """Remove and return every waiting delivery for which `keep` is false."""
        dropped: list[T] = []
        for actor in list(self._lanes):
            lane = self._lanes[actor]
            kept = deque(w for w in lane if keep(w.item))
            dropped.extend(w.item for w in lane if not keep(w.item))
            if kept:
                self._lanes[actor] = kept
            else:
                del self._lanes[actor]
        return dropped

    def _pop(self, chosen: Waiting[T]) -> None:
        lane = self._lanes[chosen.actor]
        lane.popleft()
        if not lane:
            del self._lanes[chosen.actor]


@dataclass(eq=False, slots=True)
class _Turn:
    """A held delivery's wait for its slot: True runs it, False returns it unrun."""

    live: Callable[[], bool]
    granted: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairScheduler:
    """`FairQueue` for the consumer's delivery tasks: each awaits `turn` before running its
    batch, and calls `done` after."""

    def __init__(
        self, slots: int, share: int | None, on_change: Callable[[int], None] | None = None
    ) -> None:
        self._queue: FairQueue[_Turn] = FairQueue(slots, share)
        self._closed = False
        # Told the number of deliveries held waiting after each change (a gauge).
        self._on_change = on_change or (lambda _: None)
        # The most deliveries held waiting at once (observability, and tests).
        self.most_waiting = 0
        # Held deliveries given up unrun because their channel closed (aiormq cancels the
        # delivery tasks of a closing channel; those it missed are found by `live`).
        self.dropped = 0
        self.share = share
        # Called when a batch ends with a slot left free (the waiting room fills it).
        self.on_slot_free: Callable[[], None] = lambda: None

    @property
    def waiting(self) -> int:
        return self._queue.waiting

    @property
    def busiest(self) -> int:
        return self._queue.busiest

    def running(self, actor: int | None) -> int:
        return self._queue.running(actor)

    @property
    def running_total(self) -> int:
        return self._queue.running_total

    def has_free_slot(self) -> bool:
        return not self._closed and self._queue.has_free_slot()

    def try_take(self, actor: int | None) -> bool:
        """Take a free slot for `actor` now, without waiting (call `done(actor)` after)."""
        return not self._closed and self._queue.try_take(actor)

    def at_share(self) -> list[int]:
        return self._queue.at_share()

    async def turn(self, actor: int | None, live: Callable[[], bool]) -> bool:
        """Wait until this delivery may run: True, then run it and call `done(actor)`; False
        when it must not run (the scheduler closed, or `live()` turned false: its channel is
        gone) and the delivery is left as it is, unacknowledged."""
        if self._closed:
            return False
        turn = _Turn(live)
        waiting = self._queue.arrive(turn, actor)
        self._grant()
        try:
            return await turn.granted
        except asyncio.CancelledError:
            granted = turn.granted
            taken = not self._queue.remove(waiting)
            if not taken:
                self.dropped += 1
            elif granted.done() and not granted.cancelled() and granted.result():
                self.done(actor)  # granted, but never to run: its slot goes on
            self._changed()
            raise

    def done(self, actor: int | None) -> None:
        self._queue.finished(actor)
        self._grant()
        if self.has_free_slot():
            self.on_slot_free()

    def drop_stale(self) -> None:
        """Return unrun the held deliveries whose channel closed (a reconnect): their delivery
        tags mean nothing on the new channel, and the broker hands them out again there."""
        for turn in self._queue.drain(keep=lambda t: t.live()):
            self.dropped += 1
            _refuse(turn)
        self._changed()

    def close(self) -> None:
        """Shutting down: what waits will not run (nor anything arriving later); it is left
        unacknowledged for the broker to hand out again once the channel closes."""
        self._closed = True
        for turn in self._queue.drain():
            _refuse(turn)
        self._changed()

    def _grant(self) -> None:
        while (waiting := self._queue.take()) is not None:
            turn = waiting.item
            if turn.granted.done():  # its task was cancelled, the cleanup still to run
                self._queue.finished(waiting.actor)
            elif turn.live():
                turn.granted.set_result(True)
            else:
                self._queue.finished(waiting.actor)
                self.dropped += 1
                turn.granted.set_result(False)
        self._changed()

    def _changed(self) -> None:
        waiting = self._queue.waiting
        self.most_waiting = max(self.most_waiting, waiting)
        self._on_change(waiting)


def _refuse(turn: _Turn) -> None:
    if not turn.granted.done():
        turn.granted.set_result(False)
