"""Cancel in every phase of a batch's life, against the real database and broker, each batch
judged by the fault suite's oracle (tests/faults/oracle.py): what committed before the cancel
took effect stays, every other operation is SKIPPED "cancelled", nothing runs after the cancel,
one terminal status, every event published, nothing lost.

The consumer runs in this process; a cancel goes through the service's own job control, as the
HTTP API and `batchops cancel` call it. A row lock held by the test pins the consumer at an exact
point: on an order's row it stops an operation before it changes anything; `FOR KEY SHARE` on the
batch row lets operations commit but stops the statement that makes the batch terminal.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.adapters.database import create_engine
from consumer.adapters.maintenance import cleanup
from consumer.config import Settings
from consumer.domain.model import Actor, Role
from consumer.service_layer.job_control import Verdict
from contracts import BatchRequest, Mode
from tests.faults.cancelled import is_cancelled_skip
from tests.faults.model import notes_batch, status_batch
from tests.faults.oracle import Allowances, Report
from tests.faults.scenario import Scenario, open_scenario
from tests.integration.conftest import API, auth
from tests.integration.helpers import eventually, publish_raw
from tests.integration.in_process import InProcessConsumer

ADMIN = Actor(1, Role.ADMIN, is_active=True)
STAFF = Actor(2, Role.STAFF, is_active=True)
CLIENT_3 = Actor(3, Role.CLIENT, is_active=True)
PRO_6 = Actor(6, Role.PROFESSIONAL, is_active=True)
LOCK_ORDER = "SELECT 1 FROM orders WHERE id = :order_id FOR UPDATE"
LOCK_BATCH_KEY = "SELECT 1 FROM batch_operations WHERE batch_id = :b FOR KEY SHARE"


@pytest.fixture
async def world(settings: Settings, database_url: str, tmp_path: Path) -> AsyncIterator[Scenario]:
    # The test's own look-ups go straight to PostgreSQL, past the PgBouncer the service may use.
    async with open_scenario(settings, tmp_path, observer_url=database_url) as opened:
        yield opened


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[InProcessConsumer]:
    running = InProcessConsumer(settings)
    yield running
    await running.close()


async def judge(
    world: Scenario, consumer: InProcessConsumer, allow: Allowances | None = None
) -> Report:
    """The oracle, once everything settled; it stops the consumer."""
    return await world.oracle.check(consumer.stop, allow)


async def results(world: Scenario, batch_id: uuid.UUID) -> list[Any]:
    return await world.db.rows(
        'SELECT "index", outcome, error_code, event FROM operation_results'
        ' WHERE batch_id = :b ORDER BY "index"',
        b=batch_id,
    )


async def cancel_shown(world: Scenario, batch_id: uuid.UUID) -> list[str]:
    """Each operation's outcome, with `cancelled` for an operation SKIPPED for the cancel."""
    return [
        "cancelled" if is_cancelled_skip(row) else row.outcome
        for row in await results(world, batch_id)
    ]


async def batch_status(world: Scenario, batch_id: uuid.UUID) -> str | None:
    status: str | None = await world.db.scalar(
        "SELECT status FROM batch_operations WHERE batch_id = :b", b=batch_id
    )
    return status


async def notes_of(world: Scenario, *order_ids: int) -> list[str]:
    rows = await world.db.rows(
        "SELECT notes FROM orders WHERE id = ANY(:ids) ORDER BY id", ids=list(order_ids)
    )
    return [notes for (notes,) in rows]


async def outbox_keys(world: Scenario) -> list[str]:
    rows = await world.db.rows("SELECT routing_key FROM outbox ORDER BY id")
    return [key for (key,) in rows]


async def stored_batch(world: Scenario, batch_id: uuid.UUID) -> dict[str, Any]:
    rows = await world.db.rows("SELECT * FROM batch_operations WHERE batch_id = :b", b=batch_id)
    return dict(rows[0]._mapping)


async def run_to_the_end(
    world: Scenario, consumer: InProcessConsumer, request: BatchRequest
) -> None:
    """Publish `request` to a running consumer and wait until its batch is terminal."""
    await world.publish(request)

    async def terminal() -> bool:
        return await world.not_terminal([request]) == 0

    await eventually(terminal, what=f"batch {request.batch_id} terminal")


class TestCancelWhileQueued:
    @pytest.mark.parametrize("actor", [ADMIN, STAFF, None], ids=["admin", "staff", "operator"])
    async def test_a_batch_cancelled_before_a_consumer_has_its_request_runs_nothing_when_it_comes(
        self, world: Scenario, consumer: InProcessConsumer, actor: Actor | None
    ) -> None:
        target = notes_batch((3, "q0"), (6, "q1"), (9, "q2"))
        await world.publish(target)  # queued: no consumer runs yet

        assert await world.cancel(target.batch_id, actor) is Verdict.ACCEPTED
        assert await outbox_keys(world) == [], (
            "the completion of a batch cancelled in advance is published when its request "
            "arrives, not before"
        )
        await consumer.start()

        await judge(world, consumer)
        assert await cancel_shown(world, target.batch_id) == ["cancelled"] * 3
        assert await notes_of(world, 3, 6, 9) == ["", "", ""], "a cancelled request runs nothing"

    @pytest.mark.parametrize("actor", [CLIENT_3, PRO_6], ids=["client", "professional"])
    async def test_a_client_or_professional_is_told_an_unseen_batch_does_not_exist_and_it_runs(
        self, world: Scenario, consumer: InProcessConsumer, actor: Actor
    ) -> None:
        target = notes_batch((3, "u0"), (6, "u1"))
        await world.publish(target)

        assert await world.cancel(target.batch_id, actor) is Verdict.NOT_FOUND
        assert await batch_status(world, target.batch_id) is None, (
            "a refused cancel records nothing"
        )
        await consumer.start()

        await judge(world, consumer)
        assert await batch_status(world, target.batch_id) == "completed"

    async def test_the_events_of_a_batch_cancelled_in_advance_echo_its_request_correlation_id(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        target = notes_batch((3, "c0"), (6, "c1"))
        assert await world.cancel(target.batch_id, ADMIN) is Verdict.ACCEPTED
        world.oracle.expect(target)
        await world.publisher.publish(target, correlation_id="order-sync-cancelled")
        await consumer.start()

        await judge(world, consumer)
        completion = json.loads((await stored_batch(world, target.batch_id))["completion_event"])
        assert completion["correlation_id"] == "order-sync-cancelled", (
            "every event of a batch echoes its request's correlation_id, a batch cancelled in "
            "advance too"
        )
        assert [
            json.loads(row.event)["correlation_id"] for row in await results(world, target.batch_id)
        ] == ["order-sync-cancelled"] * 2


class TestCancelWhilePending:
    async def test_a_batch_submitted_over_http_is_cancelled_at_once_and_its_request_runs_nothing(
        self,
        world: Scenario,
        consumer: InProcessConsumer,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        target = notes_batch((3, "p0"), (6, "p1"), (9, "p2"))
        submission = target.model_dump(mode="json", exclude={"actor_id"})
        world.oracle.expect(target)
        answer = await client.post(f"{API}/", json=submission, headers=auth(tokens[ADMIN.id]))
        assert answer.status_code == 202, answer.text
        assert await batch_status(world, target.batch_id) == "pending"

        assert await world.cancel(target.batch_id, ADMIN) is Verdict.ACCEPTED

        assert await batch_status(world, target.batch_id) == "cancelled", (
            "a batch no consumer has taken yet is cancelled at once"
        )
        assert await cancel_shown(world, target.batch_id) == ["cancelled"] * 3
        assert "batch.custom.cancelled" in await outbox_keys(world), (
            "its completion is queued for publication at once"
        )
        await consumer.start()
        await judge(world, consumer)
        assert await notes_of(world, 3, 6, 9) == ["", "", ""], "its request ran nothing"


class TestCancelWhileRunning:
    @pytest.mark.parametrize("mode", [Mode.CONTINUE, Mode.STOP_ON_ERROR])
    async def test_a_claimed_batch_cancelled_before_its_first_operation_commits_runs_nothing(
        self, world: Scenario, consumer: InProcessConsumer, mode: Mode
    ) -> None:
        target = notes_batch((3, "k0"), (6, "k1"), (3, "k2"), mode=mode)
        await consumer.start()
        async with world.db.holding(LOCK_ORDER, order_id=3) as lock:
            await world.publish(target)
            await world.db.wait_until_blocked(lock)  # claimed, inside operation 0
            assert await batch_status(world, target.batch_id) == "processing"

            assert await world.cancel(target.batch_id, ADMIN) is Verdict.ACCEPTED

        await judge(world, consumer)
        assert await cancel_shown(world, target.batch_id) == ["cancelled"] * 3
        assert await notes_of(world, 3, 6) == ["", ""], "operation 0 was rolled back"

    async def test_the_operation_in_hand_rolls_back_and_is_skipped_with_the_rest_the_earlier_stay(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        target = notes_batch((3, "m0"), (6, "m1"), (9, "m2"), (12, "m3"), (3, "m4"))
        await consumer.start()
        async with world.db.holding(LOCK_ORDER, order_id=9) as lock:
            await world.publish(target)
            await world.db.wait_for_results(target.batch_id, 2)
            await world.db.wait_until_blocked(lock)  # inside operation 2

            assert await world.cancel(target.batch_id, STAFF) is Verdict.ACCEPTED

        await judge(world, consumer)
        assert await cancel_shown(world, target.batch_id) == [
            "succeeded",
            "succeeded",
            "cancelled",
            "cancelled",
            "cancelled",
        ]
        assert await notes_of(world, 3, 6, 9, 12) == ["m0", "m1", "", ""]

    async def test_a_stop_on_error_status_walk_keeps_the_transitions_committed_before_the_cancel(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        target = status_batch(
            (3, "accepted"), (3, "in_progress"), (6, "accepted"), (6, "in_progress"),
            mode=Mode.STOP_ON_ERROR,
        )  # fmt: skip
        await consumer.start()
        async with world.db.holding(LOCK_ORDER, order_id=6) as lock:
            await world.publish(target)
            await world.db.wait_for_results(target.batch_id, 2)
            await world.db.wait_until_blocked(lock)

            assert await world.cancel(target.batch_id, None) is Verdict.ACCEPTED

        await judge(world, consumer)
        assert await cancel_shown(world, target.batch_id) == [
            "succeeded",
            "succeeded",
            "cancelled",
            "cancelled",
        ]
        statuses = await world.db.rows("SELECT status FROM orders WHERE id IN (3, 6) ORDER BY id")
        assert [s for (s,) in statuses] == ["in_progress", "pending"]

    async def test_an_atomic_batch_cancelled_mid_run_is_rolled_back_whole(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        target = notes_batch((3, "a0"), (6, "a1"), (9, "a2"), (12, "a3"), mode=Mode.ATOMIC)
        await consumer.start()
        async with world.db.holding(LOCK_ORDER, order_id=9) as lock:
            await world.publish(target)
            await world.db.wait_until_blocked(lock)  # operations 0 and 1 ran, uncommitted
            in_hand = await world.db.scalar(
                "SELECT in_hand FROM batch_operations WHERE batch_id = :b", b=target.batch_id
            )
            assert in_hand == 2, "the atomic batch must be inside operation 2"

            assert await world.cancel(target.batch_id, ADMIN) is Verdict.ACCEPTED

        await judge(world, consumer)
        assert await cancel_shown(world, target.batch_id) == ["cancelled"] * 4
        assert await notes_of(world, 3, 6, 9, 12) == ["", "", "", ""], "nothing stays"


class TestCancelTooLate:
    async def test_a_cancel_that_comes_while_the_batch_is_being_finished_waits_and_is_refused(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        target = notes_batch((3, "f0"), (6, "f1"))
        await consumer.start()
        async with world.db.holding(LOCK_ORDER, order_id=3) as order_lock:
            await world.publish(target)
            await world.db.wait_until_blocked(order_lock)  # claimed: its row exists
            async with world.db.holding(LOCK_BATCH_KEY, b=target.batch_id) as batch_lock:
                await order_lock.release()
                await world.db.wait_for_results(target.batch_id, 2)
                await world.db.wait_until_blocked(batch_lock)  # finishing it, not yet terminal
                assert await batch_status(world, target.batch_id) == "processing"
                cancel = asyncio.create_task(world.cancel(target.batch_id, ADMIN))
                await world.db.wait_until_blocked(batch_lock, count=2)  # queued behind it

        assert await asyncio.wait_for(cancel, 20) is Verdict.REFUSED, (
            "every operation had its result: the batch was only finishing, nothing was left to "
            "cancel"
        )
        await judge(world, consumer)
        stored = await stored_batch(world, target.batch_id)
        assert (stored["status"], stored["cancel_requested_at"]) == ("completed", None)

    async def test_a_finished_batch_is_refused_and_nothing_about_it_changes(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        await consumer.start()
        finished = status_batch((3, "accepted"), (6, "completed"))  # partial: a CONFLICT
        cancelled = notes_batch((9, "t0"))
        assert await world.cancel(cancelled.batch_id, ADMIN) is Verdict.ACCEPTED
        for request in (finished, cancelled):
            await run_to_the_end(world, consumer, request)
        before = [await stored_batch(world, r.batch_id) for r in (finished, cancelled)]
        outbox_before = await outbox_keys(world)

        for request in (finished, cancelled):
            for actor in (ADMIN, None):
                assert await world.cancel(request.batch_id, actor) is Verdict.REFUSED

        assert [await stored_batch(world, r.batch_id) for r in (finished, cancelled)] == before
        assert await outbox_keys(world) == outbox_before, "a refused cancel publishes nothing"
        await judge(world, consumer)
        assert [b["status"] for b in before] == ["partial", "cancelled"]

    async def test_a_rejected_batch_is_refused(
        self, world: Scenario, consumer: InProcessConsumer
    ) -> None:
        await consumer.start()
        batch_id = uuid.uuid4()
        body = {
            "batch_id": str(batch_id),
            "operation_type": "order_update",
            "actor_id": 1,
            "operations": [{"method": "PATCH", "resource_id": 3, "data": {}}],
            "unknown_field": True,
        }
        await publish_raw(
            world.settings.amqp_url,
            world.topology.requests_exchange,
            json.dumps(body).encode(),
            message_id=str(batch_id),
        )

        async def recorded() -> bool:
            return await batch_status(world, batch_id) == "rejected"

        await eventually(recorded, what="the rejected batch on record")
        before = await stored_batch(world, batch_id)

        assert await world.cancel(batch_id, ADMIN) is Verdict.REFUSED
        assert await stored_batch(world, batch_id) == before
        await judge(world, consumer, Allowances(rejections=1, dead_letters=1))


class TestCleanupOfCancelsInAdvance:
    async def test_a_cancel_in_advance_whose_request_never_came_is_deleted_after_the_cutoff(
        self, world: Scenario, settings: Settings
    ) -> None:
        never_sent = notes_batch((3, "n0"))
        assert await world.cancel(never_sent.batch_id, ADMIN) is Verdict.ACCEPTED
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                before = await cleanup(conn, datetime.now(UTC) - timedelta(days=1), dry_run=False)
            assert before.batches == 0, "a recent cancel in advance is kept"
            assert await batch_status(world, never_sent.batch_id) == "pending"
            async with engine.begin() as conn:
                counted = await cleanup(
                    conn, datetime.now(UTC) + timedelta(seconds=1), dry_run=True
                )
                deleted = await cleanup(
                    conn, datetime.now(UTC) + timedelta(seconds=1), dry_run=False
                )
        finally:
            await engine.dispose()
        assert (counted.batches, deleted.batches) == (1, 1)
        assert await batch_status(world, never_sent.batch_id) is None
