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
from tests.faults.database import ScenarioDatabase
from tests.faults.model import SEEDED_ORDERS, OrderState, orders_of, run_batch
from tests.integration.helpers import eventually

TERMINAL = frozenset({"completed", "partial", "failed"})


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

    def republished(self) -> list[uuid.UUID]:
        return [event_id for event_id, n in self.copies.items() if n > 1]


class Oracle:
    def __init__(
        self,
        db: ScenarioDatabase,
        probe: QueueProbe,
        recorder: EventRecorder,
        topology: Topology,
    ) -> None:
        self._db = db
        self._probe = probe
        self._recorder = recorder
        self._topology = topology
        self.published: dict[uuid.UUID, BatchRequest] = {}

    def expect(self, request: BatchRequest) -> None:
        """Judge `request` at the end; batches may not share orders (their interleaving would
        make the model ambiguous), except copies of the same batch."""
        mine = orders_of(request)
        for other in self.published.values():
            if other.batch_id != request.batch_id and mine & orders_of(other):
                raise ValueError(f"batches {other.batch_id} and {request.batch_id} share orders")
        self.published[request.batch_id] = request

    async def check(
        self, stop_consumers: Callable[[], None], allow: Allowances | None = None
    ) -> Report:
        """Wait until everything settled, then judge; `stop_consumers` ends every consumer
        process (to count what they held unacknowledged)."""
        allow = allow or Allowances()
        await self._wait_until_settled(allow)
        received = await self._recorder.drain()
        problems = await self._left_pending(stop_consumers, allow)
        batches = {
            row.batch_id: row
            for row in await self._db.rows(
                "SELECT batch_id, status, completed_operations, failed_operations,"
                " skipped_operations, completion_event, operation_type FROM batch_operations"
            )
        }
        results: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for row in await self._db.rows(
            'SELECT batch_id, "index", outcome, error_code, event FROM operation_results'
            ' ORDER BY batch_id, "index"'
        ):
            results[row.batch_id].append(row)
        expected_events, model = self._judge_batches(batches, results, allow, problems)
        await self._judge_orders(model, problems)
        copies = self._judge_events(received, expected_events, allow, problems)
        if problems:
            listed = "\n- ".join(problems)
            raise AssertionError(f"the oracle found {len(problems)} problem(s):\n- {listed}")
        return Report(copies)

    # -- 1 and 4: terminal within the bound, nothing pending -------------------------------

    async def _wait_until_settled(self, allow: Allowances) -> None:
        ids = list(self.published)

        async def all_terminal() -> bool:
            rows = await self._db.rows(
                "SELECT count(*) FROM batch_operations WHERE batch_id = ANY(:ids)"
                " AND status IN ('completed', 'partial', 'failed')",
                ids=ids,
            )
            return int(rows[0][0]) == len(ids)

        try:
            await eventually(
                all_terminal, what="every batch terminal", timeout=allow.terminal_within
            )
        except AssertionError:
            stuck = await self._db.rows(
                "SELECT batch_id, status FROM batch_operations WHERE batch_id = ANY(:ids)", ids=ids
            )
            raise AssertionError(
                f"not every batch reached a terminal status within {allow.terminal_within}s: "
                f"{[(str(b), s) for b, s in stuck]} of {len(ids)} published"
            ) from None

        async def outbox_empty() -> bool:
            return await self._db.unsent_events() == 0

        requests = self._topology.requests_queue

        async def nothing_ready() -> bool:
            return (await self._probe.depth(requests)).ready == 0

        await eventually(outbox_empty, what="every outbox row sent", timeout=allow.terminal_within)
        await eventually(nothing_ready, what=f"{requests} empty", timeout=allow.terminal_within)

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
            self._judge_results(request, rows, model, allow, problems)
            self._judge_counters(request, row, rows, problems)
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
    ) -> None:
        where = f"batch {request.batch_id}"
        actual = [(Outcome(r.outcome), r.error_code) for r in rows]
        unavailable = [i for i, (_, code) in enumerate(actual) if code == ErrorCode.UNAVAILABLE]
        if unavailable and not allow.unavailable:
            problems.append(f"{where}: operations {unavailable} UNAVAILABLE in a healed scenario")
        expected = run_batch(
            request,
            model,
            unavailable=set(unavailable) if allow.unavailable else set(),
            poisoned=allow.poisoned.get(request.batch_id),
        )
        for index, (want, row) in enumerate(zip(expected, rows, strict=True)):
            got = (Outcome(row.outcome), row.error_code)
            if want is None:
                continue
            wanted = (want.outcome, want.code.value if want.code else None)
            if got != wanted:
                problems.append(
                    f"{where} operation {index}: result {got}, the model expects {wanted} "
                    "(an operation ran twice, ran on a wrong state, or never ran)"
                )
            elif want.after is not None:
                data = json.loads(row.event).get("data") or {}
                shown = OrderState(str(data.get("status")), str(data.get("notes")))
                if shown != want.after:
                    problems.append(
                        f"{where} operation {index}: the event shows the order as {shown}, the "
                        f"model has {want.after} (an earlier effect was applied twice or lost)"
                    )

    @staticmethod
    def _judge_counters(
        request: BatchRequest, batch: Any, rows: list[Any], problems: list[str]
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
        if batch.status != status:
            problems.append(f"{where} is {batch.status}, its results make it {status}")
        if batch.completion_event is None:
            problems.append(f"{where} is terminal without a completion event")
            return
        completion = BatchCompleted.model_validate_json(batch.completion_event)
        stored = [OperationResult.model_validate_json(r.event) for r in rows]
        if completion.results != stored:
            problems.append(f"{where}: the completion's results differ from the stored results")

    async def _judge_orders(self, model: dict[int, OrderState], problems: list[str]) -> None:
        rows = await self._db.rows("SELECT id, status, notes FROM orders ORDER BY id")
        for order_id, status, notes in rows:
            want = model.get(order_id, OrderState()) if order_id in SEEDED_ORDERS else None
            if want is not None and OrderState(status, notes) != want:
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
