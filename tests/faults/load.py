"""The load a fault strikes: a few hundred four-operation batches of every kind the model knows,
each on orders of its own so that the oracle's model stays unambiguous.

Five kinds take turns, each on two fresh orders (o, p):

- notes, continue: four appended lines, all succeed;
- a status walk, continue: o accepted, o in_progress, p accepted, p accepted (a CONFLICT);
- a status walk, stop_on_error: o accepted, o completed (a CONFLICT), then two SKIPPED;
- notes, atomic: four appended lines, all succeed in one transaction;
- a status walk, atomic: o accepted, p accepted, o accepted (a CONFLICT) rolls back the lot.
"""

from __future__ import annotations

from collections.abc import Callable

from contracts import BatchRequest, Mode
from tests.faults.model import notes_batch, status_batch

LOAD_BATCHES = 280
IN_FLIGHT_AT_FAULT = 200  # batches not yet terminal when the fault strikes, at least
ORDERS_PER_BATCH = 2
LOAD_ORDERS = 1200  # seeded on the scenario's own server; the load uses the first 560


def _notes(o: int, p: int, tag: str, mode: Mode) -> BatchRequest:
    lines = ((o, f"{tag}-0"), (p, f"{tag}-1"), (o, f"{tag}-2"), (p, f"{tag}-3"))
    return notes_batch(*lines, mode=mode)


def _walk(o: int, p: int, tag: str, mode: Mode) -> BatchRequest:
    """Ends in a CONFLICT: p is accepted twice."""
    changes = ((o, "accepted"), (o, "in_progress"), (p, "accepted"), (p, "accepted"))
    return status_batch(*changes, mode=mode)


def _stopping_walk(o: int, p: int, tag: str, mode: Mode) -> BatchRequest:
    """A CONFLICT at operation 1 (accepted cannot become completed)."""
    changes = ((o, "accepted"), (o, "completed"), (p, "accepted"), (p, "in_progress"))
    return status_batch(*changes, mode=mode)


def _conflicting_walk(o: int, p: int, tag: str, mode: Mode) -> BatchRequest:
    """A CONFLICT at operation 2 (o accepted twice)."""
    changes = ((o, "accepted"), (p, "accepted"), (o, "accepted"), (p, "cancelled"))
    return status_batch(*changes, mode=mode)


_KINDS: list[tuple[Callable[[int, int, str, Mode], BatchRequest], Mode]] = [
    (_notes, Mode.CONTINUE),
    (_walk, Mode.CONTINUE),
    (_stopping_walk, Mode.STOP_ON_ERROR),
    (_notes, Mode.ATOMIC),
    (_conflicting_walk, Mode.ATOMIC),
]


def mixed_load(count: int = LOAD_BATCHES, first_order: int = 1) -> list[BatchRequest]:
    """`count` batches of the five kinds in turn; batch k changes orders first_order + 2k and
    first_order + 2k + 1 only."""
    made = []
    for k in range(count):
        make, mode = _KINDS[k % len(_KINDS)]
        o = first_order + ORDERS_PER_BATCH * k
        made.append(make(o, o + 1, f"L{k}", mode))
    return made


def orders_used(count: int = LOAD_BATCHES, first_order: int = 1) -> range:
    return range(first_order, first_order + ORDERS_PER_BATCH * count)
