"""Fair share's waiting room at work in one consumer (docs/operations.md, "Fair share").

A request that cannot start at once (every slot busy, or its actor at its share while others'
requests wait) is parked in PostgreSQL and acknowledged: it no longer depends on this consumer
staying alive, and no crash raises its delivery count. Whenever a slot is free, the consumer
leases the next parked request (an actor under its share first, oldest first), runs it like a
delivery, and removes it once its batch is terminal. A lease is renewed while the batch runs;
one left by a killed consumer runs out and the request waits again for any consumer.

While a flood is being taken in (INTAKE_BACKLOG requests or more on their way into the room),
leases fill only the share of the slots: the CPU the other slots' batches would take goes to
taking the flood off the queue, so that other actors' requests queued behind it reach the room,
and their turn, sooner (docs/performance.md, "Fair share").

A parked request's runs count like a delivery's: past the delivery limit it runs once more as
a last chance and is then given up on, with its copy in `{ns}.dead` (adapters/dead_letter_copies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import structlog

from consumer import metrics
from consumer.adapters.dead_letter_copies import DeadLetterCopies
from consumer.log_config import LogThrottle
from consumer.service_layer.batch_run import Disposition, Interrupted
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.fair_share import FairScheduler
from consumer.service_layer.intake import Delivery
from consumer.service_layer.waiting_room import Parked, ToPark, WaitingRoom

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)
# Requests on their way into the room from which a flood is taken in first: about one insert's
# worth (a flood parks some ten per insert); 16 and 32 let B wait longer (docs/performance.md).
INTAKE_BACKLOG = 8


def consumer_name() -> str:
    """Who holds a lease: unique per process run (a restarted process is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ParkedRequests:
    def __init__(
        self,
        room: WaitingRoom,
        scheduler: FairScheduler,
        executor: BatchExecutor,
        dead_letters: DeadLetterCopies,
        *,
        delivery_limit: int,
        lease_seconds: float,
        poll_seconds: float = 0.5,
        gate: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self._room = room
        self._scheduler = scheduler
        self._executor = executor
        self._dead_letters = dead_letters
        self._delivery_limit = delivery_limit
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._gate = gate
        self.owner = consumer_name()
        # True while requests are believed to wait here: this consumer parked one, or the last
        # lease found one. Requests arriving meanwhile park too, so as not to overtake them.
        self.known = False
        # The actors whose requests this consumer parked since the room was last found empty:
        # a delivery of theirs must not start before their parked ones.
        self._parked_actors: set[int] = set()
        # Requests this consumer parked and leased since it started (observability, tests).
        self.parked = self.leased = 0
        # Leased requests of this consumer (their leases renewed), and those of them settled
        # but not yet removed.
        self._held: set[int] = set()
        self._settled: set[int] = set()
        self._to_park: list[tuple[ToPark, asyncio.Future[None]]] = []
        # Requests between `park` and their insert's commit (the intake's backlog).
        self._on_their_way = 0
        self._parking: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        # Set once stopping with no run left to renew leases for.
        self._quiet = asyncio.Event()
        scheduler.on_slot_free = self._wake.set

    @property
    def runs(self) -> set[asyncio.Task[None]]:
        """The runs of parked requests in hand."""
        return set(self._runs)

    async def park(self, delivery: Delivery, batch: tuple[uuid.UUID, int], key: str) -> None:
        """Store the delivery's request to run later (acknowledge the delivery after). Requests
        arriving while an insert is on its way go together in the next one: a flood is taken
        off the queue without a transaction per request."""
        batch_id, actor = batch
        if not self.known:  # one line per busy spell, not per request
            log.info("fair_share_waiting_room_in_use", actor_id=actor)
        # Known before it is stored: a delivery arriving meanwhile must not overtake it.
        self.known = True
        self._parked_actors.add(actor)
        stored = asyncio.get_running_loop().create_future()
        self._to_park.append((ToPark(batch_id, actor, delivery, key), stored))
        if self._parking is None or self._parking.done():
            self._parking = asyncio.create_task(self._park_pending())
        self._on_their_way += 1
        try:
            await stored
        finally:
            self._on_their_way -= 1
            # Stored or not, the intake's backlog shrank: leases held for it may go on.
            self._wake.set()
        metrics.PARKED.inc()
        self.parked += 1

    async def _park_pending(self) -> None:
        while self._to_park:
            taken, self._to_park = self._to_park, []
            try:
                await self._park_group(taken)
            finally:  # cancelled: what waits must not wait for good
                for _, stored in taken:
                    if not stored.done():
                        stored.set_exception(Interrupted("parking was cancelled"))

    async def _park_group(self, taken: list[tuple[ToPark, asyncio.Future[None]]]) -> None:
        """Park `taken` in one insert; if it fails, each one alone, so that a request the
        database refuses (a NUL in a header) fails only its own delivery."""
        try:
            await self._room.park_all([request for request, _ in taken])
        except Exception as exc:  # noqa: BLE001 - each waiting delivery gets its outcome
            if len(taken) == 1 or isinstance(exc, Interrupted):
                _settle_all(taken, exc)
                return
            for one in taken:
                await self._park_group([one])
            return
        _settle_all(taken, None)

    async def fill_slots(self) -> None:
        """Until `stop()`: lease parked requests into free slots as they free, and look every
        `poll_seconds` for requests parked by other consumers or left by a dead one."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            try:
                await self._fill_free_slots()
            except Interrupted:
                return
            except Exception as exc:  # noqa: BLE001 - a bug or a broken row: keep the loop alive
                _throttled.error("waiting_room_lease_failed", error=repr(exc))
        with contextlib.suppress(Exception):
            await self._remove_settled()

    async def _fill_free_slots(self) -> None:
        """One wake-up's work: lease into the free slots; requests settled since the last lease
        are removed with the next one, or alone when no slot was free to lease with. Not while
        leases wait for a flood's intake: the lease made as the running fall to the share takes
        them (a transaction saved per batch ending meanwhile)."""
        await self._lease_while_free()
        if self._settled and not self.taking_a_flood_in:
            await self._remove_settled()

    async def keep_leases(self) -> None:
        """Until `stop()` and then `abandon()` or the last run's end: renew the leases of the
        requests this consumer runs (a shutdown lets the batches in hand reach a safe point,
        which may take longer than a lease)."""
        while not self._quiet.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self._lease_seconds / 3)
                return
            if self._held:
                await self._renew()
            if not self._stopping:
                with contextlib.suppress(Exception):
                    metrics.FAIR_SHARE_WAITING.set(await self._room.waiting())

    async def _renew(self) -> None:
        held = set(self._held)
        try:
            kept = await self._room.renew(self.owner, held)
        except Exception as exc:  # noqa: BLE001 - renewed on the next round, or it runs out
            _throttled.warning("waiting_room_renew_failed", error=repr(exc))
            return
        lost = held & self._held - kept  # those settled meanwhile are not lost
        if lost:
            # Its lease ran out (the database was away longer than it): another consumer may
            # run it too, which the result rows' keys make harmless (docs/reliability.md).
            log.warning("waiting_room_lease_lost", parked_ids=sorted(lost))

    def stop(self) -> None:
        """Lease nothing more; runs in hand reach a safe point and give their request back."""
        self._stopping = True
        self._wake.set()
        if not self._runs:
            self._quiet.set()

    def abandon(self) -> None:
        """Shutting down past its timeout: stop renewing the leases of runs still going (as
        if the process were killed: another consumer takes them over once they run out)."""
        self._quiet.set()

    @property
    def taking_a_flood_in(self) -> bool:
        """Requests arrive faster than the inserts store them: the slots beyond the share wait."""
        return self._on_their_way >= INTAKE_BACKLOG

    def may_hold_requests_of(self, actor: int) -> bool:
        """This consumer parked requests of `actor` that may still wait."""
        return actor in self._parked_actors

    def _may_lease(self) -> bool:
        """A slot is free, and no flood is being taken in while the share of slots runs."""
        scheduler = self._scheduler
        if self._stopping or not scheduler.has_free_slot():
            return False
        return not self.taking_a_flood_in or scheduler.running_total < (scheduler.share or 1)

    async def _lease_while_free(self) -> None:
        while self._may_lease():
            settled = set(self._settled)
            parked = await self._room.lease(self.owner, self._scheduler.at_share(), settled)
            self._forget(settled)
            if parked is None:
                if self.known:
                    log.info(
                        "fair_share_waiting_room_empty", parked=self.parked, leased=self.leased
                    )
                # Requests on their way in still count: nothing may overtake them.
                self.known = bool(self._to_park) or not (
                    self._parking is None or self._parking.done()
                )
                if not self.known:
                    self._parked_actors.clear()
                return
            self.known = True
            self.leased += 1
            if self._stopping:  # stop() came while the lease was on its way
                await self._give_back(parked)
                return
            self._held.add(parked.id)
            taken = self._scheduler.try_take(parked.actor)
            task = asyncio.create_task(self._run(parked, taken=taken))
            self._runs.add(task)
            task.add_done_callback(self._run_ended)

    def _run_ended(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("parked_run_failed", exc_info=task.exception())
        if self._stopping and not self._runs:
            self._quiet.set()

    async def _run(self, parked: Parked, *, taken: bool) -> None:
        try:
            # A delivery took the slot while the lease was on its way: wait for the next one.
            if not taken and not await self._scheduler.turn(parked.actor, live=lambda: True):
                await self._give_back(parked)
                return
            try:
                await self._run_in_slot(parked)
            finally:
                self._scheduler.done(parked.actor)
        finally:
            if parked.id not in self._settled:  # else renewed until the row is removed
                self._held.discard(parked.id)

    async def _run_in_slot(self, parked: Parked) -> None:
        delivery = self._this_run(parked)
        if parked.attempt > 1:
            metrics.REDELIVERIES.inc()
        try:
            with metrics.IN_FLIGHT.track_inprogress():
                async with self._gate():
                    disposition = await self._executor.handle(delivery)
        except Interrupted:
            log.info("batch_left_for_later", parked_id=parked.id)
            await self._give_back(parked)
            return
        except Exception:
            # A bug outside an operation: the lease runs out and the request runs again, this
            # run counted (as a delivery the consumer failed on goes back to the queue).
            log.exception("parked_batch_failed", parked_id=parked.id, attempt=parked.attempt)
            return
        try:
            if disposition is Disposition.DEAD_LETTER:
                metrics.DEAD_LETTERED.inc()
                await self._dead_letters.publish(parked, "rejected")
            elif delivery.dead_lettered:
                await self._dead_letters.publish(parked, "delivery_limit")
            await self._settle(parked.id)
        except Exception as exc:  # noqa: BLE001 - the broker or the database away
            # Its lease runs out and it runs again: the batch is terminal, so that run only
            # publishes its completion (or rejection) again, and then settles it.
            log.warning("parked_request_not_settled", parked_id=parked.id, error=repr(exc))

    async def _settle(self, parked_id: int) -> None:
        """Its batch is terminal: the row goes with the next lease (the slot it frees is
        usually filled at once), its lease kept until then; at once when shutting down."""
        if self._stopping:
            await self._room.remove([parked_id])
            self._forget({parked_id})
            return
        self._settled.add(parked_id)
        self._wake.set()

    async def _remove_settled(self) -> None:
        settled = set(self._settled)
        if settled:
            await self._room.remove(settled)
            self._forget(settled)

    def _forget(self, settled: set[int]) -> None:
        self._settled -= settled
        self._held -= settled

    def _this_run(self, parked: Parked) -> Delivery:
        """The delivery as this run sees it: past the delivery limit, its last chance (it runs
        to the end even through a shutdown), and after that, given up on."""
        past = parked.attempt - self._delivery_limit
        if past <= 0:
            return parked.delivery
        log.error("parked_request_over_delivery_limit", parked_id=parked.id, attempt=parked.attempt)
        if past == 1:
            metrics.DEAD_LETTERED.inc()
        return replace(parked.delivery, dead_lettered=True, give_up=past > 1)

    async def _give_back(self, parked: Parked) -> None:
        try:
            await self._room.give_back(self.owner, parked.id)
        except Exception as exc:  # noqa: BLE001 - shutting down: the lease runs out instead
            log.info("waiting_room_give_back_failed", parked_id=parked.id, error=repr(exc))


def _settle_all(
    taken: list[tuple[ToPark, asyncio.Future[None]]], outcome: BaseException | None
) -> None:
    for _, stored in taken:
        if stored.done():  # its delivery's task was cancelled (its channel closed)
            continue
        if outcome is None:
            stored.set_result(None)
        else:
            stored.set_exception(outcome)
