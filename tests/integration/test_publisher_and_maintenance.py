"""The publisher's event subscriptions and errors; retention clean-up and user statistics."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert

from consumer.adapters.database import create_engine
from consumer.adapters.maintenance import cleanup, user_stats
from consumer.adapters.tables import batch_operations, webhooks
from consumer.config import Settings
from contracts import (
    BatchCompleted,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Event,
    OperationResult,
)
from publisher import BatchPublisher, EventSubscription, TopologyMismatchError
from tests.integration.helpers import batch, batch_row, count_batches, patch
from tests.support import EventLog


@pytest.mark.usefixtures("service")
class TestSubscriptions:
    async def test_subscribe_yields_typed_events_matching_only_its_pattern(
        self, settings: Settings
    ) -> None:
        body = batch(6, patch(3, status="accepted"), patch(9, status="completed"))
        request = BatchRequest.model_validate_json(json.dumps(body))
        async with (
            BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher,
            publisher.subscribe("operation.*.failed") as failures,
        ):
            await publisher.publish(request)
            first = await asyncio.wait_for(anext(aiter(failures)), 20)

        assert isinstance(first, OperationResult)
        assert first.batch_id == request.batch_id
        assert first.index == 1
        assert first.error is not None
        assert first.error.code is ErrorCode.CONFLICT

    async def test_a_subscription_to_several_patterns_yields_each_matching_event_once(
        self, settings: Settings
    ) -> None:
        body = batch(6, patch(3, status="accepted"), patch(9, status="completed"))
        request = BatchRequest.model_validate_json(json.dumps(body))
        async with (
            BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher,
            # The last two both match the completion: it must still arrive once.
            publisher.subscribe("operation.*.failed", "batch.#", "batch.*.partial") as events,
        ):
            await publisher.publish(request)
            received = await _events_until_quiet(events, quiet_for=1.0, within=20)

        kinds = [(type(e).__name__, getattr(e, "index", None)) for e in received]
        assert kinds == [("OperationResult", 1), ("BatchCompleted", None)]


async def _events_until_quiet(
    events: EventSubscription, *, quiet_for: float, within: float
) -> list[Event]:
    """Every event until a completion has arrived and nothing more came for `quiet_for`
    seconds (a duplicate would have)."""
    received: list[Event] = []
    iterator = aiter(events)
    async with asyncio.timeout(within):
        while True:
            wait = quiet_for if any(isinstance(e, BatchCompleted) for e in received) else None
            try:
                received.append(await asyncio.wait_for(anext(iterator), wait))
            except TimeoutError:
                return received


class TestTopologyMismatch:
    async def test_a_publisher_with_another_delivery_limit_gets_a_clear_error(
        self, settings: Settings
    ) -> None:
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace):
            pass
        with pytest.raises(TopologyMismatchError, match="BATCHOPS_DELIVERY_LIMIT"):
            async with BatchPublisher(
                settings.amqp_url, namespace=settings.namespace, delivery_limit=9
            ):
                pass


@pytest.mark.usefixtures("service")
class TestMaintenance:
    async def test_cleanup_deletes_only_batches_finished_before_the_cutoff(
        self, settings: Settings, events: EventLog
    ) -> None:
        request = BatchRequest.model_validate_json(json.dumps(batch(6, patch(3, notes="n"))))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            await publisher.publish(request)
        await events.completion(request.batch_id)
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                past = datetime.now(UTC) - timedelta(days=1)
                kept = await cleanup(conn, past, dry_run=False)
                would = await cleanup(conn, datetime.now(UTC) + timedelta(seconds=1), dry_run=True)
            assert (kept.batches, would.batches) == (0, 1)
            assert await count_batches(settings.database_url) == 1
            async with engine.begin() as conn:
                gone = await cleanup(conn, datetime.now(UTC) + timedelta(seconds=1), dry_run=False)
        finally:
            await engine.dispose()

        assert gone.batches == 1
        assert await batch_row(settings.database_url, request.batch_id) is None

    async def test_user_stats_count_batches_by_status_and_type_with_the_success_rate(
        self, settings: Settings
    ) -> None:
        partial = batch(6, patch(3, status="accepted"), patch(9, status="completed"))
        completed = batch(6, patch(6, notes="n"))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            for body in (partial, completed):
                request = BatchRequest.model_validate_json(json.dumps(body))
                await publisher.publish_and_wait(request, timeout=20)
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                stats = await user_stats(conn, 6)
                nobody = await user_stats(conn, 3)
        finally:
            await engine.dispose()

        assert stats.total_batches == 2
        assert stats.by_status == {"partial": 1, "completed": 1}
        assert stats.by_operation_type == {"order_update": 2}
        assert stats.success_rate == 66.67
        assert nobody.total_batches == 0


class TestCleanupAndWebhooks:
    # No service runs here: its webhook worker would try the row still being tried.
    async def test_cleanup_keeps_a_batch_whose_webhook_is_still_being_tried(
        self, settings: Settings
    ) -> None:
        # Finished two days ago, each with a webhook in another state.
        states = {
            "still tried": {},
            "delivered": {"delivered_at": func.now()},
            "given up": {"given_up_at": func.now()},
        }
        ids = {state: uuid.uuid4() for state in states}
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                for state, batch_id in ids.items():
                    await conn.execute(insert(batch_operations).values(finished_batch(batch_id)))
                    await conn.execute(
                        insert(webhooks).values(
                            batch_id=batch_id, url="https://example.com/", **states[state]
                        )
                    )
                counted = await cleanup(conn, datetime.now(UTC), dry_run=True)
                deleted = await cleanup(conn, datetime.now(UTC), dry_run=False)
        finally:
            await engine.dispose()

        assert (counted.batches, deleted.batches) == (2, 2)
        assert await batch_row(settings.database_url, ids["still tried"]) is not None
        assert await batch_row(settings.database_url, ids["delivered"]) is None
        assert await batch_row(settings.database_url, ids["given up"]) is None


def finished_batch(batch_id: uuid.UUID) -> dict[str, object]:
    """A batch row completed two days ago."""
    finished = datetime.now(UTC) - timedelta(days=2)
    return {
        "batch_id": batch_id,
        "operation_type": "order_update",
        "actor_id": 6,
        "mode": "continue",
        "status": BatchStatus.COMPLETED.value,
        "total_operations": 1,
        "completed_operations": 1,
        "fingerprint": bytes(32),
        "created_at": finished,
        "completed_at": finished,
    }
