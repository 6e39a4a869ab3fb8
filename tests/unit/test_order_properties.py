"""Property: any batch of order updates ends exactly as a small model of docs/contract.md
(Domain rules) predicts.

The model below is written from the text of docs/contract.md, not from
consumer.domain.orders, so the two are checked against each other: random batches of 1–20
`order_update` operations on orders 1–4 of the demo marketplace, run by BatchExecutor on the
in-memory unit of work in each mode.
The actor is random per batch (users 1–8 or the unknown 999): `actor_id` belongs to the batch,
not to an operation (docs/contract.md, Batch request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from consumer.domain.model import OrderStatus
from consumer.service_layer.batch_run import Disposition
from consumer.service_layer.events import EventFactory
from consumer.service_layer.executor import BatchExecutor
from consumer.service_layer.handlers import HANDLERS
from consumer.service_layer.intake import Delivery, IntakePolicy
from consumer.service_layer.retry import RetryPolicy
from contracts import (
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    BatchCompleted,
    BatchStatus,
    Mode,
    Outcome,
    Topology,
)
from tests.unit.fakes import FakeDatabase, demo_marketplace, transactions_for

BATCH_ID = UUID("6b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d")
ORDER_IDS = (1, 2, 3, 4)
ACTORS = (1, 2, 3, 4, 5, 6, 7, 8, 999)

# -- the model: docs/contract.md for order_update, nothing imported from consumer.domain ----

STATUSES = ("pending", "accepted", "in_progress", "completed", "cancelled")
NEXT = {
    "pending": {"accepted", "cancelled"},
    "accepted": {"in_progress", "cancelled"},
    "in_progress": {"completed", "cancelled"},
    "completed": set(),
    "cancelled": set(),
}
BACK_OFFICE = {1, 2}  # seed: user 1 admin, user 2 staff
KNOWN_USERS = set(range(1, 9))  # seed: users 1–8, all active; 999 is unknown
PROFESSIONAL_MAY_SET = {"accepted", "in_progress", "completed"}  # accept, start, complete
PRICE_EDITABLE = {"pending", "accepted"}
CLIENT_MAY_CANCEL = {"pending", "accepted"}
CODES = {400: "VALIDATION_ERROR", 403: "PERMISSION_DENIED", 409: "CONFLICT", 424: "SKIPPED"}


@dataclass(frozen=True)
class ModelOrder:
    client: int
    professional_user: int
    status: str = "pending"
    notes: str = ""
    price: Decimal = Decimal("100.00")


Start = tuple[str, ...]  # the status of orders 1–4 before the batch
SEEDED: Start = ("pending",) * len(ORDER_IDS)
CLIENT_CASE: Start = ("in_progress", "pending", "pending", "accepted")  # client 4 owns 1 and 4


def seeded_orders(start: Start = SEEDED) -> dict[int, ModelOrder]:
    """The demo data of docs/contract.md: order i has client 3 + (i mod 3) and professional
    1 + (i mod 3), and professional k is user 5 + k; `start` moves them on as earlier batches
    could have."""
    return {
        i: ModelOrder(client=3 + i % 3, professional_user=6 + i % 3, status=status)
        for i, status in zip(ORDER_IDS, start, strict=True)
    }


def predict(  # noqa: PLR0911 - one return per rule reads like the documented rules themselves
    actor: int, order: ModelOrder, change: dict[str, str]
) -> int:
    """The status code of one single-field change by `actor` to `order`."""
    if actor not in KNOWN_USERS:
        return 403  # an unknown actor: every operation 403, whatever the data
    if "\x00" in change.get("notes", ""):
        return 400  # text PostgreSQL cannot store
    is_client = actor == order.client
    is_professional = actor == order.professional_user
    if not (actor in BACK_OFFICE or is_client or is_professional):
        return 403  # anybody else (told before any 409, which would leak the order's status)
    if "status" in change:
        target = change["status"]
        if target not in NEXT[order.status]:
            return 409  # a party or back office learns the transition is impossible
        if actor in BACK_OFFICE:
            return 200
        if is_professional:
            return 200 if target in PROFESSIONAL_MAY_SET else 403
        return 200 if target == "cancelled" and order.status in CLIENT_MAY_CANCEL else 403
    if "notes" in change:
        return 200  # either party, or back office
    if actor in BACK_OFFICE or (is_professional and order.status in PRICE_EDITABLE):
        return 200
    return 403


def apply(order: ModelOrder, change: dict[str, str]) -> ModelOrder:
    if "status" in change:
        return replace(order, status=change["status"])
    if "notes" in change:
        return replace(order, notes=change["notes"])
    return replace(order, price=Decimal(change["price"]))


@dataclass(frozen=True)
class Prediction:
    orders: dict[int, ModelOrder]
    codes: list[int]
    # For each succeeded operation, its order as the operation leaves it.
    after: dict[int, ModelOrder]

    @property
    def batch_status(self) -> BatchStatus:
        succeeded = self.codes.count(200)
        if succeeded == len(self.codes):
            return BatchStatus.COMPLETED
        return BatchStatus.FAILED if succeeded == 0 else BatchStatus.PARTIAL


Op = tuple[int, dict[str, str]]


def model_run(actor: int, ops: list[Op], mode: Mode, start: Start = SEEDED) -> Prediction:
    orders = seeded_orders(start)
    codes: list[int] = []
    after: dict[int, ModelOrder] = {}
    for index, (order_id, change) in enumerate(ops):
        if mode is Mode.STOP_ON_ERROR and any(code != 200 for code in codes):
            codes.append(424)  # not executed after the first failure
            continue
        code = predict(actor, orders[order_id], change)
        codes.append(code)
        if code == 200:
            orders[order_id] = apply(orders[order_id], change)
            after[index] = orders[order_id]
        elif mode is Mode.ATOMIC:
            # One failure rolls everything back; it keeps its own code, the rest are skipped.
            codes = [code if i == index else 424 for i in range(len(ops))]
            return Prediction(seeded_orders(start), codes, {})
    return Prediction(orders, codes, after)


# -- running the real thing --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def execute(actor: int, ops: list[Op], mode: Mode, start: Start) -> FakeDatabase:
    db = demo_marketplace(order_count=len(ORDER_IDS))
    for order_id, status in zip(ORDER_IDS, start, strict=True):
        db.orders[order_id] = replace(db.orders[order_id], status=OrderStatus(status))
    executor = BatchExecutor(
        transactions_for(db, RetryPolicy(attempts=1)),
        HANDLERS,
        {},
        IntakePolicy(
            max_body_bytes=MAX_BODY_BYTES,
            max_operations=MAX_OPERATIONS,
            allowed_publishers=frozenset(),
            operation_types=frozenset(HANDLERS),
            custom_handlers=frozenset(),
        ),
        EventFactory(Topology()),
        delivery_limit=5,
        clock=Clock(),
    )
    body = json.dumps(
        {
            "batch_id": str(BATCH_ID),
            "operation_type": "order_update",
            "actor_id": actor,
            "mode": mode.value,
            "operations": [
                {"method": "PATCH", "resource_id": order_id, "data": change}
                for order_id, change in ops
            ],
        }
    ).encode()
    delivery = Delivery(body=body, user_id="producer", content_type="application/json")
    with capture_logs():  # thousands of batches: keep their log lines out of a failure report
        assert asyncio.run(executor.handle(delivery)) is Disposition.ACK
    return db


def the_completion(db: FakeDatabase) -> BatchCompleted:
    [message] = [m for m in db.outbox if m.routing_key.startswith("batch.")]
    return BatchCompleted.model_validate_json(message.body)


def check_against_model(db: FakeDatabase, prediction: Prediction, ops: list[Op]) -> None:
    rows = db.results_of(BATCH_ID)
    assert [row.index for row in rows] == list(range(len(ops)))
    assert [row.status for row in rows] == prediction.codes, "per-operation status codes"
    for row, code in zip(rows, prediction.codes, strict=True):
        expected_outcome = {200: Outcome.SUCCEEDED, 424: Outcome.SKIPPED}.get(code, Outcome.FAILED)
        assert row.outcome is expected_outcome, f"operation {row.index}"
        assert row.error_code == CODES.get(code), f"operation {row.index}"

    for order_id, expected in prediction.orders.items():
        order = db.orders[order_id]
        actual = (order.status.value, order.notes, order.price)
        assert actual == (expected.status, expected.notes, expected.price), f"order {order_id}"

    completion = the_completion(db)
    for result in completion.results:
        if result.index in prediction.after:
            expected = prediction.after[result.index]
            assert result.data is not None
            assert (result.data["status"], result.data["notes"], result.data["price"]) == (
                expected.status,
                expected.notes,
                f"{expected.price:.2f}",
            ), f"data of operation {result.index}"

    state = db.batches[BATCH_ID].state
    counts = (state.completed, state.failed, state.skipped)
    assert sum(counts) == state.total == len(ops)
    assert counts == (
        prediction.codes.count(200),
        sum(1 for code in prediction.codes if code not in (200, 424)),
        prediction.codes.count(424),
    )
    assert state.status is completion.status is prediction.batch_status
    assert (
        completion.completed_operations,
        completion.failed_operations,
        completion.skipped_operations,
        completion.total_operations,
    ) == (*counts, len(ops))
    assert completion.progress == 100.0
    assert completion.success_rate == round(counts[0] * 100 / len(ops), 2)


# -- strategies --------------------------------------------------------------------------------

notes = st.one_of(
    st.text(max_size=20),
    st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=5), st.text(max_size=5)),
)
prices = st.decimals(min_value=0, max_value=1_000_000, places=2, allow_nan=False).map(
    lambda d: f"{d:.2f}"
)


def own_orders(actor: int) -> list[int]:
    return [i for i, o in seeded_orders().items() if actor in (o.client, o.professional_user)]


# A batch has one actor, so a client could never meet an order in progress unless orders may
# start further on (as earlier batches could have left them); half the examples start seeded.
starts = st.one_of(
    st.just(SEEDED),
    st.tuples(*[st.sampled_from(STATUSES)] * len(ORDER_IDS)),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, list[Op], Start]:
    """An actor, 1–20 operations and the orders' statuses before them.

    Swarm testing: each batch draws its status changes from its own random subset of statuses,
    and a party's batch mostly touches its own orders, so that rare paths (a client cancelling
    an order in progress) turn up in a few hundred examples.
    """
    actor = draw(st.sampled_from(ACTORS))
    start = draw(starts)
    targets = draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=5, unique=True))
    order_ids = st.sampled_from(ORDER_IDS)
    if mine := own_orders(actor):
        order_ids = st.one_of(st.sampled_from(mine), order_ids)
    status_change = st.builds(lambda s: {"status": s}, st.sampled_from(targets))
    change = st.one_of(
        status_change,
        status_change,  # twice: the status machine is where most rules are
        st.builds(lambda n: {"notes": n}, notes),
        st.builds(lambda p: {"price": p}, prices),
    )
    ops = draw(st.lists(st.tuples(order_ids, change), min_size=1, max_size=20))
    return actor, ops, start


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


def describe(actor: int, ops: list[Op], start: Start, prediction: Prediction) -> Iterator[str]:
    yield f"actor {actor}, orders 1-4 start {start}"
    for index, ((order_id, change), code) in enumerate(zip(ops, prediction.codes, strict=True)):
        yield f"  {index}: order {order_id} {change!r} -> expect {code}"


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
@PROPERTY
@given(batch=batches())
# Rare cells of the rules, always run on top of the random examples.
@example(batch=(4, [(1, {"status": "cancelled"}), (4, {"status": "cancelled"})], CLIENT_CASE))
@example(
    batch=(7, [(1, {"price": "1.00"}), (1, {"status": "in_progress"}), (1, {"price": "2"})], SEEDED)
)
@example(
    batch=(3, [(3, {"status": "cancelled"}), (1, {"notes": "a\x00"}), (3, {"notes": "x"})], SEEDED)
)
@example(batch=(999, [(1, {"notes": "a\x00"}), (3, {"status": "accepted"})], SEEDED))
@example(batch=(2, [(1, {"status": s}) for s in (*STATUSES[1:4], "cancelled")], SEEDED))
def test_a_batch_of_order_updates_ends_as_the_design_predicts(mode, batch):
    actor, ops, start = batch
    prediction = model_run(actor, ops, mode, start)
    for line in describe(actor, ops, start, prediction):
        note(line)
    event(f"batch {prediction.batch_status.value}")
    check_against_model(execute(actor, ops, mode, start), prediction, ops)


# -- the model itself, pinned on a few hand-checked cases --------------------------------------


class TestModel:
    def test_the_seed_matches_the_documented_demo_data(self):
        orders = seeded_orders()
        assert [(o.client, o.professional_user) for o in orders.values()] == [
            (4, 7),
            (5, 8),
            (3, 6),
            (4, 7),
        ]

    def test_the_professional_takes_an_order_through_to_completion(self):
        steps = [(1, {"status": s}) for s in ("accepted", "in_progress", "completed")]
        prediction = model_run(7, steps, Mode.CONTINUE)
        assert prediction.codes == [200, 200, 200]
        assert prediction.orders[1].status == "completed"

    def test_stop_on_error_skips_everything_after_the_first_failure(self):
        ops: list[Op] = [(3, {"notes": "x"}), (1, {"notes": "y"}), (3, {"notes": "z"})]
        assert model_run(3, ops, Mode.STOP_ON_ERROR).codes == [200, 403, 424]

    def test_atomic_keeps_only_the_failing_code(self):
        ops: list[Op] = [(3, {"notes": "x"}), (3, {"status": "completed"}), (3, {"notes": "z"})]
        prediction = model_run(3, ops, Mode.ATOMIC)
        assert prediction.codes == [424, 409, 424]
        assert prediction.orders == seeded_orders()
        assert prediction.batch_status is BatchStatus.FAILED
