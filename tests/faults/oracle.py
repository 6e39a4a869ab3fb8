"""The oracle of the fault suite, checked after every fault scenario once the fault has healed.

1. Every batch reached a terminal status within a bound, with one result per operation.
2. Every operation took effect exactly once: each result is what the model predicts from the
   results before it, each success event shows the order as the model has it, and the orders
   end exactly as the model says (rolled-back and failed work left no effect).
3. Every operation event and completion event was published at least once; all copies of an
   event carry the same event_id, routing key and body (timestamps included), equal to what the
   database recorded; no other event was published (rolled-back work left no event).
4. Nothing is left pending: the requests queue has no ready or unacknowledged message, the
   outbox has no unsent row, and the dead-letter queue holds exactly the expected messages.
5. A batch whose cancel was accepted (`expect_cancelled`) ends `cancelled`: the operations that
   committed before the cancel took effect are judged as above, every other one reports SKIPPED
   "cancelled", and nothing ran after the cancel took effect (tests/faults/cancelled.py).
6. Nothing was wrongly failed: no operation ended INTERNAL_ERROR (500), UNAVAILABLE
   (503) or SKIPPED (424) where the model, run as if there had been no fault, predicts anything
   else. A fault that healed in time may cost latency, never a result.

Batches may not share orders, except pairs declared to commute (`expect_commuting`): two notes
batches whose lines may land on their shared orders in either order, each exactly once.

Problems are collected and reported together, each saying what it means.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contracts import (
    BatchCompleted,
    BatchRequest,
    ErrorCode,
    OperationResult,
    Outcome,
    Topology,
    batch_routing_key,
    completion_event_id,
    operation_event_id,
    operation_routing_key,
)
from tests.faults.broker import EventRecorder, QueueProbe, Received
from tests.faults.cancelled import ran_before_cancel
from tests.faults.database import ScenarioDatabase
from tests.faults.model import (
    NOTE_HANDLERS,
    SEEDED_ORDERS,
    OrderState,
    orders_of,
    run_batch,
)
from tests.integration.helpers import eventually

TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})
# What a healthy operation must never end with because of a fault that healed in time.
FAILURE_CODES = frozenset(
    {ErrorCode.INTERNAL_ERROR.value, ErrorCode.UNAVAILABLE.value, ErrorCode.SKIPPED.value}
)
MAX_LISTED = 40  # problems (and wrongly failed batches) spelt out; the rest are counted
SETTLED_AFTER_TIMEOUT = 5.0  # further waits once the batches already failed to settle


@dataclass(frozen=True)
class Allowances:
    """What a scenario's fault may legitimately change in the outcome."""

    # A transient database fault that outlived the retries is reported as UNAVAILABLE (no effect).
    unavailable: bool = False
    # batch id -> index of the operation that crashed the consumer on every delivery.
    poisoned: dict[uuid.UUID, int] = field(default_factory=dict)
    dead_letters: int = 0
    # Bystanders returned by every crash of a poison batch may be dead-lettered beside it (the
    # broker counts returns); they must still complete, through the reconciler's isolated run.
    extra_dead_letters: int = 0
    # Events the scenario published through the outbox itself: event id -> body.
    extra_events: dict[uuid.UUID, bytes] = field(default_factory=dict)
    # Distinct `batch.*.rejected` events expected (requests refused, dead-lettered).
    rejections: int = 0
    terminal_within: float = 30.0


@dataclass(frozen=True)
class Report:
    """What the oracle saw, for scenario-specific assertions."""

    copies: Counter[uuid.UUID]  # event id -> how many copies arrived
    wrongly_failed: int = 0  # operations that ended 500/503/424 against the model: 0 to pass

    def republished(self) -> list[uuid.UUID]:
        return [event_id for event_id, n in self.copies.items() if n > 1]


class Oracle:
    def __init__(
        self,
        db: ScenarioDatabase,
        probe: QueueProbe,
        recorder: EventRecorder,
        topology: Topology,
        seeded_orders: range = SEEDED_ORDERS,
    ) -> None:
        self._db = db
        self._probe = probe
        self._recorder = recorder
        self._topology = topology
        self._seeded = seeded_orders
        self.published: dict[uuid.UUID, BatchRequest] = {}
        self._orders_taken: dict[int, uuid.UUID] = {}  # order -> the batch that changes it
        self._partner: dict[uuid.UUID, uuid.UUID] = {}  # batch -> the batch it commutes with
        self.commuting_orders: set[int] = set()
        self.cancelled: set[uuid.UUID] = set()

    def expect(self, request: BatchRequest) -> None:
        """Judge `request` at the end; batches may not share orders (their interleaving would
        make the model ambiguous), except copies of the same batch and declared pairs."""
        partner = self._partner.get(request.batch_id)
        for order_id in orders_of(request):
            owner = self._orders_taken.setdefault(order_id, request.batch_id)
            if owner not in {request.batch_id, partner}:
                raise ValueError(f"batches {owner} and {request.batch_id} share orders")
        self.published[request.batch_id] = request

    def expect_commuting(self, first: BatchRequest, second: BatchRequest) -> None:
        """Judge two notes batches that share orders and may run in either order, or
        interleaved: each shared order must end with each batch's lines exactly once."""
        for request in (first, second):
            if request.operation_type.value != "custom" or request.handler not in NOTE_HANDLERS:
                raise ValueError(f"only notes batches commute, not {request.batch_id}")
            lines = [str(op.data["text"]) for op in request.operations]
            if len(set(lines)) != len(lines):
                raise ValueError(f"the lines of {request.batch_id} must be unique")
        self._partner[first.batch_id] = second.batch_id
        self._partner[second.batch_id] = first.batch_id
        self.commuting_orders |= orders_of(first) & orders_of(second)
        self.expect(first)
        self.expect(second)

    def expect_cancelled(self, batch_id: uuid.UUID) -> None:
        """Judge `batch_id` as a batch whose cancel was accepted (published before or after)."""
        self.cancelled.add(batch_id)

    async def check(
        self, stop_consumers: Callable[[], None], allow: Allowances | None = None
    ) -> Report:
        """Wait until everything settled, then judge; `stop_consumers` ends every consumer
        process (to count what they held unacknowledged)."""
        allow = allow or Allowances()
        problems = await self._wait_until_settled(allow)
        received = await self._recorder.drain()
        problems += await self._left_pending(stop_consumers, allow)
        batches = {
            row.batch_id: row
            for row in await self._db.rows(
                "SELECT batch_id, status, completed_operations, failed_operations,"
                " skipped_operations, completion_event, operation_type, cancel_requested_at"
                " FROM batch_operations"
            )
        }
        results: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for row in await self._db.rows(
            'SELECT batch_id, "index", outcome, error_code, event FROM operation_results'
            ' ORDER BY batch_id, "index"'
        ):
            results[row.batch_id].append(row)
        wrongly_failed: dict[uuid.UUID, list[str]] = {}
        expected_events, model = self._judge_batches(
            batches, results, allow, problems, wrongly_failed
        )
        if wrongly_failed:
            problems.insert(0, _wrongly_failed_problem(wrongly_failed))
        await self._judge_orders(model, problems)
        copies = self._judge_events(received, expected_events, allow, problems)
        if problems:
            listed = "\n- ".join(problems[:MAX_LISTED])
            more = len(problems) - MAX_LISTED
            tail = f"\n- … and {more} more problem(s)" if more > 0 else ""
            raise AssertionError(f"the oracle found {len(problems)} problem(s):\n- {listed}{tail}")
        return Report(copies, sum(len(ops) for ops in wrongly_failed.values()))

    # -- 1 and 4: terminal within the bound, nothing pending -------------------------------

    async def _wait_until_settled(self, allow: Allowances) -> list[str]:
        """Wait for every batch to be terminal and for the outbox and the requests queue to
        empty; what did not happen within the bound is a problem (judged with the rest)."""
        ids = list(self.published)
        problems: list[str] = []

        async def all_terminal() -> bool:
            rows = await self._db.rows(
                "SELECT count(*) FROM batch_operations WHERE batch_id = ANY(:ids)"
                " AND status = ANY(:terminal)",
                ids=ids,
                terminal=sorted(TERMINAL),
            )
            return int(rows[0][0]) == len(ids)

        then = allow.terminal_within
        try:
            await eventually(
                all_terminal, what="every batch terminal", timeout=allow.terminal_within
            )
        except AssertionError:
            found = dict(
                await self._db.rows(
                    "SELECT batch_id, status FROM batch_operations WHERE batch_id = ANY(:ids)",
                    ids=ids,
                )
            )
            stuck = [(str(b), found.get(b, "never recorded")) for b in ids]
            stuck = [(b, s) for b, s in stuck if s not in TERMINAL]
            statuses = Counter(s for _, s in stuck)
            problems.append(
                f"not every batch reached a terminal status within {allow.terminal_within}s: "
                f"{len(stuck)} of {len(ids)} published are not ({dict(statuses)}), e.g. "
                f"{stuck[:5]}"
            )
            then = SETTLED_AFTER_TIMEOUT

        async def outbox_empty() -> bool:
            return await self._db.unsent_events() == 0

        requests = self._topology.requests_queue

        async def nothing_ready() -> bool:
            return (await self._probe.depth(requests)).ready == 0

        for probe, what in ((outbox_empty, "every outbox row sent"), (nothing_ready, "")):
            try:
                await eventually(probe, what=what or f"{requests} empty", timeout=then)
            except AssertionError as exc:
                problems.append(str(exc))
        return problems

    async def _left_pending(
        self, stop_consumers: Callable[[], None], allow: Allowances
    ) -> list[str]:
        """Stop the consumers: a request they had not acknowledged is then ready again."""
        stop_consumers()
        requests = self._topology.requests_queue

        async def unsubscribed() -> bool:
            return (await self._probe.depth(requests)).consumers == 0

        await eventually(unsubscribed, what=f"the broker saw the consumers of {requests} go")
        problems = []
        left = (await self._probe.depth(requests)).ready
        if left:
            problems.append(f"{left} request(s) were delivered but never acknowledged")
        dead_letter_queue = self._topology.dead_letter_queue
        dead = (await self._probe.depth(dead_letter_queue)).ready
        if not allow.dead_letters <= dead <= allow.dead_letters + allow.extra_dead_letters:
            problems.append(
                f"{dead_letter_queue} holds {dead} message(s), expected {allow.dead_letters}"
            )
        return problems

    # -- 1 and 2: results against the model ------------------------------------------------

    def _judge_batches(
        self,
        batches: dict[uuid.UUID, Any],
        results: dict[uuid.UUID, list[Any]],
        allow: Allowances,
        problems: list[str],
        wrongly_failed: dict[uuid.UUID, list[str]],
    ) -> tuple[dict[uuid.UUID, tuple[str, bytes]], dict[int, OrderState]]:
        """The events the results call for, and the orders as the model leaves them."""
        model: dict[int, OrderState] = {}
        expected_events: dict[uuid.UUID, tuple[str, bytes]] = {}
        for batch_id, request in self.published.items():
            row = batches.get(batch_id)
            if row is None:
                problems.append(f"batch {batch_id} was never recorded")
                continue
            rows = results.get(batch_id, [])
            indexes = [r.index for r in rows]
            if indexes != list(range(len(request.operations))):
                problems.append(
                    f"batch {batch_id}: result indexes {indexes}, expected one per operation "
                    f"0..{len(request.operations) - 1}"
                )
                continue
            cancelled = batch_id in self.cancelled
            ran = len(rows)
            if cancelled:
                ran, found = ran_before_cancel(request, rows, row.cancel_requested_at)
                problems += found
            # What ran is judged against the model; what the cancel skipped had no effect.
            before = request.model_copy(update={"operations": request.operations[:ran]})
            failed = self._judge_results(before, rows[:ran], model, allow, problems)
            if failed:
                wrongly_failed[batch_id] = failed
            self._judge_counters(request, row, rows, problems, cancelled=cancelled)
            for r in rows:
                key = operation_routing_key(request.operation_type.value, r.outcome)
                expected_events[operation_event_id(batch_id, r.index)] = (key, r.event)
            if row.completion_event is not None:
                key = batch_routing_key(request.operation_type.value, row.status)
                expected_events[completion_event_id(batch_id)] = (key, row.completion_event)
        return expected_events, model

    def _judge_results(
        self,
        request: BatchRequest,
        rows: list[Any],
        model: dict[int, OrderState],
        allow: Allowances,
        problems: list[str],
    ) -> list[str]:
        """Judge one batch's results against the model (which it advances); returns the
        operations that were wrongly failed, as `index CODE (the model: …)`."""
        where = f"batch {request.batch_id}"
        actual = [(Outcome(r.outcome), r.error_code) for r in rows]
        unavailable = [i for i, (_, code) in enumerate(actual) if code == ErrorCode.UNAVAILABLE]
        allowed = set(unavailable) if allow.unavailable else set()
        poisoned = allow.poisoned.get(request.batch_id)
        # Unless the scenario allows UNAVAILABLE, this is the model of a run with no fault.
        healthy = run_batch(request, dict(model), unavailable=allowed, poisoned=poisoned)
        wrongly_failed = []
        for index, (want, row) in enumerate(zip(healthy, rows, strict=True)):
            got = (Outcome(row.outcome), row.error_code)
            if want is not None and row.error_code in FAILURE_CODES and got != want.result:
                wrongly_failed.append(f"{index} {row.error_code} (the model: {want.shown})")
        # The rest is judged as if the wrongly failed operations had failed for a reason: no
        # effect, and the batch went on or stopped as its mode says. They are reported once,
        # above, and what follows from them is no further problem; a double effect still is.
        crashed = {
            i
            for i, (_, code) in enumerate(actual)
            if code in {ErrorCode.INTERNAL_ERROR, ErrorCode.UNAVAILABLE} and i != poisoned
        }
        expected = run_batch(
            request,
            model,
            unavailable=allowed | crashed if wrongly_failed else allowed,
            poisoned=poisoned,
        )
        for index, (want, row) in enumerate(zip(expected, rows, strict=True)):
            got = (Outcome(row.outcome), row.error_code)
            if want is None or (got != want.result and row.error_code in FAILURE_CODES):
                continue  # allowed UNAVAILABLE, or wrongly failed: judged above
            if got != want.result:
                problems.append(
                    f"{where} operation {index}: result {got}, the model expects {want.result} "
                    "(an operation ran twice, ran on a wrong state, or never ran)"
                )
            elif want.after is not None:
                data = json.loads(row.event).get("data") or {}
                shown = OrderState(str(data.get("status")), str(data.get("notes")))
                resource = request.operations[index].resource_id
                if resource in self.commuting_orders:
                    problem = _commuted_event_problem(request, index, shown, want.after)
                    if problem:
                        problems.append(f"{where} operation {index}: {problem}")
                elif shown != want.after:
                    problems.append(
                        f"{where} operation {index}: the event shows the order as {shown}, the "
                        f"model has {want.after} (an earlier effect was applied twice or lost)"
                    )
        return wrongly_failed

    @staticmethod
    def _judge_counters(
        request: BatchRequest,
        batch: Any,
        rows: list[Any],
        problems: list[str],
        *,
        cancelled: bool = False,
    ) -> None:
        where = f"batch {request.batch_id}"
        if batch.status not in TERMINAL:
            problems.append(f"{where} is {batch.status}, not terminal")
            return
        outcomes = Counter(r.outcome for r in rows)
        counters = {
            "succeeded": batch.completed_operations,
            "failed": batch.failed_operations,
            "skipped": batch.skipped_operations,
        }
        if any(counters[o] != outcomes[o] for o in counters):
            problems.append(f"{where}: counters {counters} but results {dict(outcomes)}")
        succeeded = outcomes["succeeded"]
        status = (
            "completed" if succeeded == len(rows) else "failed" if succeeded == 0 else "partial"
        )
        if cancelled and batch.status != "cancelled":
            problems.append(f"{where} is {batch.status}, but its cancel was accepted")
        elif not cancelled and batch.status != status:
            problems.append(f"{where} is {batch.status}, its results make it {status}")
        if batch.completion_event is None:
            problems.append(f"{where} is terminal without a completion event")
            return
        completion = BatchCompleted.model_validate_json(batch.completion_event)
        if completion.status.value != batch.status:
            problems.append(
                f"{where} is {batch.status}, its completion says {completion.status.value}"
            )
        stored = [OperationResult.model_validate_json(r.event) for r in rows]
        if completion.results != stored:
            problems.append(f"{where}: the completion's results differ from the stored results")

    async def _judge_orders(self, model: dict[int, OrderState], problems: list[str]) -> None:
        rows = await self._db.rows("SELECT id, status, notes FROM orders ORDER BY id")
        for order_id, status, notes in rows:
            want = model.get(order_id, OrderState()) if order_id in self._seeded else None
            if want is not None and order_id in self.commuting_orders:
                # Declared commuting batches append in either order: compare the lines.
                if status != want.status or sorted(notes.split("\n")) != sorted(
                    want.notes.split("\n")
                ):
                    problems.append(
                        f"order {order_id} is {OrderState(status, notes)}, the model has "
                        f"{want} in some order (a line was applied twice or lost)"
                    )
            elif want is not None and OrderState(status, notes) != want:
                problems.append(
                    f"order {order_id} is {OrderState(status, notes)}, the model has {want} "
                    "(an effect was applied twice, lost, or survived a rollback)"
                )

    # -- 3: events --------------------------------------------------------------------------

    @staticmethod
    def _judge_events(
        received: list[Received],
        expected: dict[uuid.UUID, tuple[str, bytes]],
        allow: Allowances,
        problems: list[str],
    ) -> Counter[uuid.UUID]:
        by_id: dict[uuid.UUID, list[Received]] = defaultdict(list)
        for event in received:
            try:
                by_id[uuid.UUID(event.message_id)].append(event)
            except ValueError:
                problems.append(f"an event without a valid message_id: {event.body[:200]!r}")
        for event_id, (routing_key, body) in expected.items():
            copies = by_id.get(event_id, [])
            if not copies:
                problems.append(f"event {event_id} ({routing_key}) was never published")
                continue
            _judge_copies(event_id, copies, routing_key, body, problems)
        for event_id, body in allow.extra_events.items():
            copies = by_id.get(event_id, [])
            if not copies:
                problems.append(f"event {event_id} (written to the outbox) was never published")
            else:
                _judge_copies(event_id, copies, copies[0].routing_key, body, problems)
        rejections = 0
        for event_id in sorted(set(by_id) - set(expected) - set(allow.extra_events)):
            copies = by_id[event_id]
            if copies[0].routing_key.endswith(".rejected"):
                # A rejection is stored nowhere: its copies can only be compared to each other.
                rejections += 1
                _judge_copies(event_id, copies, copies[0].routing_key, copies[0].body, problems)
                continue
            problems.append(
                f"event {event_id} ({copies[0].routing_key}) matches no recorded result "
                "(work that was rolled back published an event?)"
            )
        if rejections != allow.rejections:
            problems.append(f"{rejections} distinct rejection(s), expected {allow.rejections}")
        return Counter({event_id: len(copies) for event_id, copies in by_id.items()})


def _judge_copies(
    event_id: uuid.UUID,
    copies: list[Received],
    routing_key: str,
    body: bytes,
    problems: list[str],
) -> None:
    keys = {c.routing_key for c in copies}
    if keys != {routing_key}:
        problems.append(f"event {event_id}: routing keys {sorted(keys)}, expected {routing_key}")
    bodies = {c.body for c in copies}
    if len(bodies) > 1:
        problems.append(
            f"event {event_id}: {len(copies)} copies with {len(bodies)} different bodies: "
            f"{_difference(list(bodies))}"
        )
    elif bodies != {body}:
        problems.append(
            f"event {event_id}: the published body differs from the recorded one: "
            f"{_difference([next(iter(bodies)), body])}"
        )
    if json.loads(copies[0].body).get("event_id") != str(event_id):
        problems.append(f"event {event_id}: its body carries another event_id")


def _difference(bodies: list[bytes]) -> str:
    first, second = (json.loads(b) for b in bodies[:2])
    keys = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    return ", ".join(f"{k}: {first.get(k)!r} vs {second.get(k)!r}" for k in keys)


def _commuted_event_problem(
    request: BatchRequest, index: int, shown: OrderState, want: OrderState
) -> str:
    """An event of a commuting batch shows the order after its own line: whatever the other
    batch added may or may not be there yet, but its own lines so far are there exactly once."""
    operation = request.operations[index]
    mine = [
        str(op.data["text"])
        for op in request.operations[: index + 1]
        if op.resource_id == operation.resource_id
    ]
    lines = shown.notes.split("\n")
    if shown.status != want.status or any(lines.count(line) != 1 for line in mine):
        return (
            f"the event shows the order as {shown}; its own lines {mine} must each be there "
            "exactly once (an effect was applied twice or lost)"
        )
    return ""


def _wrongly_failed_problem(wrongly_failed: dict[uuid.UUID, list[str]]) -> str:
    count = sum(len(ops) for ops in wrongly_failed.values())
    listed = "; ".join(
        f"batch {batch_id}: [{', '.join(ops)}]"
        for batch_id, ops in list(wrongly_failed.items())[:MAX_LISTED]
    )
    more = len(wrongly_failed) - MAX_LISTED
    tail = f"; … and {more} more batch(es)" if more > 0 else ""
    return (
        f"wrongly failed: {count} operation(s) of {len(wrongly_failed)} batch(es) ended "
        f"INTERNAL_ERROR, UNAVAILABLE or SKIPPED where the model without the fault predicts "
        f"otherwise: {listed}{tail}"
    )
