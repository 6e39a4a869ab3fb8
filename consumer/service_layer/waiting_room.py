"""Where requests wait for a slot under fair share: a port, implemented in PostgreSQL by
adapters/waiting_room.py and in memory by the unit tests' fake.

A request that cannot run at once is parked (stored, then acknowledged to the broker) rather
than held unacknowledged: a consumer that crashes holding a delivery hands it back with its
delivery count raised, and a request that waited through a few crashes would reach the delivery
limit without having run. A parked request costs a run attempt only when a consumer leases it
to run it; a lease that is not renewed (its consumer died) expires, and another takes it over.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from uuid import UUID

from consumer.service_layer.intake import Delivery


@dataclass(frozen=True, slots=True)
class Parked:
    """A parked request leased to this consumer to run."""

    id: int
    actor: int
    routing_key: str
    # Its delivery as it came off the queue; `delivery_count` counts the runs before this one.
    delivery: Delivery

    @property
    def attempt(self) -> int:
        """This run's number, from 1."""
        return self.delivery.delivery_count + 1


@dataclass(frozen=True, slots=True)
class ToPark:
    """A delivery to store until a slot is free (its body names a valid batch and actor)."""

    batch_id: UUID
    actor: int
    delivery: Delivery
    routing_key: str


class WaitingRoom(abc.ABC):
    """Every method is one transaction, retried through transient faults and outages."""

    @abc.abstractmethod
    async def park_all(self, requests: Sequence[ToPark]) -> None:
        """Store the requests until a consumer leases them. The same request (batch_id and
        body) parked again while it still waits is stored once."""

    @abc.abstractmethod
    async def lease(
        self, owner: str, avoid: Collection[int], settled: Collection[int] = ()
    ) -> Parked | None:
        """Lease the oldest waiting request whose actor is not in `avoid`, else the oldest of
        all, to `owner` (a request whose lease ran out waits again); None if nothing waits.
        The `settled` requests are removed in the same transaction (see `remove`)."""

    @abc.abstractmethod
    async def renew(self, owner: str, ids: Collection[int]) -> set[int]:
        """Extend `owner`'s leases of `ids`; returns those it still held."""

    @abc.abstractmethod
    async def give_back(self, owner: str, parked_id: int) -> None:
        """Return a leased request unrun (shutting down): it waits again, its run uncounted."""

    @abc.abstractmethod
    async def remove(self, ids: Collection[int]) -> None:
        """The requests are settled (their batch is terminal, or they were dead-lettered)."""

    @abc.abstractmethod
    async def waiting(self) -> int:
        """How many requests wait (leased ones left out)."""
