"""Fair share between actors (docs/contract.md, "Fair share"): which delivery runs now and which
is deferred to the back of the work queue, so that one actor's flood does not starve the others.

The count of batches in flight is kept in memory, per consumer process: it costs nothing per
batch (a count in PostgreSQL would be a query per delivery, and the status it counts is only
written once a batch starts). With N competing consumers an actor may therefore have up to
N x share batches running in all; each consumer still lets the other actors' batches past.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A lap in which this consumer saw nobody else's batch means that only over-share work waits:
# deferring then just spins the queue. The actor runs at full speed ("alone") for this many
# laps' time before the next lap looks again, so looking costs about 1 / (SOLO_LAPS + 1) of
# the time. Newcomers are mostly noticed sooner, by the queue growing (`newcomers`); this is
# the fallback for those who publish too little to make it grow.
SOLO_LAPS = 10
# Bounds of that time: a lap of a few messages takes milliseconds, and a very long one must
# not leave a newcomer waiting for minutes.
MIN_SOLO_SECONDS = 0.2
MAX_SOLO_SECONDS = 10.0
# Deferrals whose copy has not come back yet that are remembered (a copy another consumer took
# never comes back to this one): the oldest are forgotten first.
MAX_OPEN_LAPS = 10_000


@dataclass(frozen=True, slots=True)
class Deferral:
    """Defer the delivery; `lap` goes with its copy, to recognise it when it comes back."""

    lap: str


class FairShare:
    """The decision for each delivery, and the count of batches each actor has running here.

    `share` None: fair share is off and every delivery runs at once."""

    def __init__(self, share: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._share = share
        self._clock = clock
        self._running: Counter[int] = Counter()
        # Deliveries seen per actor, and in all: "did anybody else's come in meanwhile?"
        self._seen: Counter[int] = Counter()
        self._seen_total = 0
        # lap id -> (actor, deliveries of other actors seen by then, when it was deferred)
        self._laps: OrderedDict[str, tuple[int, int, float]] = OrderedDict()
        self._alone_until: dict[int, float] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._next_lap = 0
        self.deferrals = 0

    @property
    def share(self) -> int | None:
        return self._share

    def running(self, actor_id: int) -> int:
        return self._running[actor_id]

    def newcomers(self) -> None:
        """Requests were published since the last look (the queue grew): they may be somebody
        else's, behind the one actor's, so look again at once. Copies deferred so far stand
        ahead of them: their laps end before reaching them and say nothing about them."""
        self._alone_until.clear()
        self._laps.clear()

    def decide(
        self, actor_id: int | None, *, redelivered: bool, lap: str | None = None
    ) -> Deferral | None:
        """A Deferral when this delivery should wait at the back of the queue, else None (then
        call `started` and, once it is settled, `finished`).

        A delivery the broker handed out before is never deferred: its attempts are spent
        already, and the copy would start counting them afresh, out of reach of the delivery
        limit. Neither is one without a valid actor_id: it is refused at once anyway."""
        if actor_id is None or self._share is None:
            return None
        now = self._clock()
        self._note_seen(actor_id, lap, now)
        if redelivered or self._running[actor_id] < self._share:
            return None
        if self._alone_until.get(actor_id, 0.0) > now:
            return None
        return self._defer(actor_id, now)

    def started(self, actor_id: int | None) -> None:
        if actor_id is not None:
            self._running[actor_id] += 1

    def finished(self, actor_id: int | None) -> None:
        if actor_id is None:
            return
        self._running[actor_id] -= 1
        if self._running[actor_id] <= 0:
            del self._running[actor_id]

    def _note_seen(self, actor_id: int, lap: str | None, now: float) -> None:
        others_before = self._seen_total - self._seen[actor_id]
        if any(a != actor_id for a in self._alone_until):
            # Somebody else's batch is here: the others are not alone any more.
            self._alone_until = {a: t for a, t in self._alone_until.items() if a == actor_id}
        self._seen[actor_id] += 1
        self._seen_total += 1
        opened = self._laps.pop(lap, None) if lap is not None else None
        if opened is None:
            return
        deferred_actor, others_then, deferred_at = opened
        if deferred_actor == actor_id and others_before == others_then:
            # A whole lap of the queue went by with nobody else's batch in it.
            lap_seconds = now - deferred_at
            alone_for = min(max(SOLO_LAPS * lap_seconds, MIN_SOLO_SECONDS), MAX_SOLO_SECONDS)
            self._alone_until[actor_id] = now + alone_for
            # Its other copies in the queue were deferred before: while it runs alone the queue
            # is not scanned, so their laps would say "nobody else" without having looked.
            for lap_id in [k for k, (a, _, _) in self._laps.items() if a == actor_id]:
                del self._laps[lap_id]

    def _defer(self, actor_id: int, now: float) -> Deferral:
        self._next_lap += 1
        lap = f"{self._prefix}-{self._next_lap}"
        # Counted before this delivery was seen: its own arrival is not "somebody else".
        others = self._seen_total - self._seen[actor_id]
        self._laps[lap] = (actor_id, others, now)
        while len(self._laps) > MAX_OPEN_LAPS:
            self._laps.popitem(last=False)
        self.deferrals += 1
        return Deferral(lap)
