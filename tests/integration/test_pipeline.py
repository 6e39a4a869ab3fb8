"""A batch published to RabbitMQ is executed, persisted and reported (docs/contract.md)."""

from __future__ import annotations

import json
import uuid

import aiormq
import pytest
from pamqp.commands import Basic

from consumer.config import Settings
from contracts import BatchCompleted, BatchRejected, BatchRequest, BatchStatus, ErrorCode, Event
from publisher import BatchPublisher, UnroutableError
from tests.integration.helpers import (
    batch,
    batch_row,
    dead_letters,
    eventually,
    executed_batches,
    order,
    patch,
    publish_raw,
    result_rows,
    unsent_events,
)
from tests.support import EventLog

# Seeded marketplace: user 6 is professional 1, who serves orders 3, 6, 9, ... (client 3).
PROFESSIONAL_1 = 6


def three_operations_one_invalid() -> dict[str, object]:
    return batch(
        PROFESSIONAL_1,
        patch(3, status="accepted"),
        patch(6, notes="call before arriving", price="120.50"),
        patch(9, status="completed"),  # pending -> completed is not a transition
    )


async def publish(settings: Settings, body: dict[str, object]) -> BatchRequest:
    request = BatchRequest.model_validate_json(json.dumps(body))
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await publisher.publish(request, correlation_id="corr-1")
    return request


@pytest.mark.usefixtures("service")
class TestBatchWithAnInvalidTransition:
    async def test_it_ends_partial_with_counters_results_and_rates(
        self, settings: Settings, events: EventLog
    ) -> None:
        request = await publish(settings, three_operations_one_invalid())

        completion = await events.completion(request.batch_id)

        assert completion.status is BatchStatus.PARTIAL
        assert (completion.total_operations, completion.completed_operations) == (3, 2)
        assert (completion.failed_operations, completion.skipped_operations) == (1, 0)
        assert completion.success_rate == 66.67
        assert completion.progress == 100.0
        assert completion.correlation_id == "corr-1"
        assert completion.duration_seconds is not None
        assert completion.duration_seconds >= 0
        assert [r.status for r in completion.results] == [200, 200, 409]
        failed = completion.results[2]
        assert failed.error is not None
        assert failed.error.code is ErrorCode.CONFLICT
        assert failed.data is None
        assert completion.results[0].data == {
            "id": 3,
            "client_id": 3,
            "professional_id": 1,
            "service_id": 1,
            "status": "accepted",
            "notes": "",
            "price": "100.00",
        }

    async def test_each_operation_and_the_completion_have_their_routing_keys(
        self, settings: Settings, events: EventLog
    ) -> None:
        request = await publish(settings, three_operations_one_invalid())
        await events.completion(request.batch_id)

        operation_keys = [key for key, _ in events.operations(request.batch_id)]
        assert operation_keys == [
            "operation.order_update.succeeded",
            "operation.order_update.succeeded",
            "operation.order_update.failed",
        ]
        assert "batch.order_update.partial" in events.routing_keys()
        assert [e.index for _, e in events.operations(request.batch_id)] == [0, 1, 2]

    async def test_the_database_holds_the_effects_the_batch_and_its_results(
        self, settings: Settings, events: EventLog
    ) -> None:
        request = await publish(settings, three_operations_one_invalid())
        await events.completion(request.batch_id)

        assert (await order(settings.database_url, 3)).status == "accepted"
        changed = await order(settings.database_url, 6)
        assert (changed.notes, str(changed.price)) == ("call before arriving", "120.50")
        assert (await order(settings.database_url, 9)).status == "pending"
        row = await batch_row(settings.database_url, request.batch_id)
        assert row is not None
        assert (row.status, row.completed_operations, row.failed_operations) == ("partial", 2, 1)
        assert row.started_at is not None
        assert row.completed_at is not None
        results = await result_rows(settings.database_url, request.batch_id)
        assert [(r.index, r.outcome, r.status_code) for r in results] == [
            (0, "succeeded", 200),
            (1, "succeeded", 200),
            (2, "failed", 409),
        ]

        async def outbox_drained() -> bool:
            return await unsent_events(settings.database_url) == 0

        await eventually(outbox_drained, what="every outbox row marked sent")


@pytest.mark.usefixtures("service")
class TestPlainAmqpProducer:
    async def test_a_batch_published_with_aiormq_and_no_publisher_library_is_executed(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = batch(PROFESSIONAL_1, patch(3, status="accepted"))
        connection = await aiormq.connect(settings.amqp_url)
        try:
            channel = await connection.channel()
            await channel.confirm_delivery()
            confirmation = await channel.basic_publish(
                json.dumps(body).encode(),
                exchange=settings.topology.requests_exchange,
                routing_key="order_update",
                mandatory=True,
                properties=aiormq.spec.Basic.Properties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=str(body["batch_id"]),
                    user_id="guest",
                    correlation_id="plain-amqp",
                    message_type="batchops.request.v1",
                ),
            )
            assert isinstance(confirmation, Basic.Ack)
        finally:
            await connection.close()

        completion = await events.completion(uuid.UUID(str(body["batch_id"])))
        assert completion.status is BatchStatus.COMPLETED
        assert completion.correlation_id == "plain-amqp"


@pytest.mark.usefixtures("service")
class TestIdempotentBatchId:
    async def test_the_same_batch_twice_executes_once_and_resends_the_same_completion(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = three_operations_one_invalid()
        request = await publish(settings, body)
        first = await events.completion(request.batch_id)
        first_results = await result_rows(settings.database_url, request.batch_id)

        await publish(settings, body)

        def two_completions(received: list[tuple[str, Event]]) -> bool:
            return sum(isinstance(e, BatchCompleted) for _, e in received) == 2

        received = await events.wait_for(two_completions)
        completions = [e for _, e in received if isinstance(e, BatchCompleted)]
        assert completions[1].event_id == first.event_id
        assert completions[1] == first, "a re-sent completion must carry the same body"
        assert len(events.operations(request.batch_id)) == 3, "no operation may run again"
        assert await result_rows(settings.database_url, request.batch_id) == first_results

    async def test_a_reused_batch_id_with_another_body_is_rejected_as_conflict(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = three_operations_one_invalid()
        request = await publish(settings, body)
        await events.completion(request.batch_id)
        before = await batch_row(settings.database_url, request.batch_id)

        different = {**body, "operations": [patch(12, status="accepted")]}
        await publish(settings, different)

        key, rejection = await events.rejection()
        assert key == "batch.order_update.rejected"
        assert rejection.code is ErrorCode.CONFLICT
        assert rejection.batch_id == request.batch_id
        assert await batch_row(settings.database_url, request.batch_id) == before
        assert (await order(settings.database_url, 12)).status == "pending"

        async def dead_lettered() -> bool:
            return bool(await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue))

        await eventually(dead_lettered, what="the conflicting request in the dead-letter queue")


def _fifty_one_operations() -> bytes:
    return json.dumps(batch(1, *(patch(i, notes="x") for i in range(1, 52)))).encode()


def _unknown_field() -> bytes:
    return json.dumps({**batch(1, patch(3, notes="x")), "priority": "high"}).encode()


def _unknown_type() -> bytes:
    return json.dumps({**batch(1, patch(3, notes="x")), "operation_type": "teleport"}).encode()


@pytest.mark.usefixtures("service")
class TestRejectedRequests:
    @pytest.mark.parametrize(
        ("body", "user_id", "routing_type", "error_type"),
        [
            pytest.param(_fifty_one_operations(), "guest", "order_update", "too_long", id="51-ops"),
            pytest.param(_unknown_field(), "guest", "order_update", "extra_forbidden", id="extra"),
            pytest.param(b"{not json", "guest", "unknown", "json_invalid", id="non-json"),
            pytest.param(
                json.dumps(batch(1, patch(3, notes="x"))).encode(),
                None,
                "order_update",
                "user_id_missing",
                id="no-user-id",
            ),
            pytest.param(_unknown_type(), "guest", "unknown", "enum", id="unknown-type"),
        ],
    )
    async def test_the_request_is_rejected_dead_lettered_and_changes_nothing(
        self,
        settings: Settings,
        events: EventLog,
        body: bytes,
        user_id: str | None,
        routing_type: str,
        error_type: str,
    ) -> None:
        await publish_raw(
            settings.amqp_url,
            settings.topology.requests_exchange,
            body,
            user_id=user_id,
            correlation_id="bad-1",
        )

        key, rejection = await events.rejection()

        assert key == f"batch.{routing_type}.rejected"
        assert isinstance(rejection, BatchRejected)
        assert rejection.status is BatchStatus.REJECTED
        assert rejection.correlation_id == "bad-1"
        assert error_type in [e.type for e in rejection.errors], rejection.errors
        assert await executed_batches(settings.database_url) == 0
        assert (await order(settings.database_url, 3)).notes == ""
        if rejection.batch_id is not None:  # named with a valid actor: on record as rejected
            row = await batch_row(settings.database_url, rejection.batch_id)
            assert row is not None, "a rejection with a valid batch_id and actor is stored"
            assert (row.status, row.code, row.actor_id) == ("rejected", "VALIDATION_ERROR", 1)
            assert row.errors == [e.model_dump() for e in rejection.errors]
            assert row.operation_type == routing_type

        async def dead_lettered() -> bool:
            return await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue) == [
                body
            ]

        await eventually(dead_lettered, what="the request in the dead-letter queue")


@pytest.mark.usefixtures("service")
class TestRequestReply:
    async def test_publish_and_wait_returns_the_completion_sent_to_reply_to(
        self, settings: Settings
    ) -> None:
        request = BatchRequest.model_validate_json(json.dumps(three_operations_one_invalid()))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            completion = await publisher.publish_and_wait(request, timeout=20)

        assert isinstance(completion, BatchCompleted)
        assert completion.batch_id == request.batch_id
        assert completion.status is BatchStatus.PARTIAL

    async def test_a_rejected_request_answers_reply_to_with_the_rejection(
        self, settings: Settings
    ) -> None:
        request = BatchRequest.model_validate_json(
            json.dumps(batch(1, patch(3, notes="x"), operation_type="custom", handler="nope"))
        )
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            answer = await publisher.publish_and_wait(request, timeout=20)

        assert isinstance(answer, BatchRejected)
        assert [e.type for e in answer.errors] == ["unknown_handler"]


class TestPublisherErrors:
    async def test_publishing_when_no_queue_is_bound_raises_unroutable(
        self, settings: Settings
    ) -> None:
        request = BatchRequest.model_validate_json(json.dumps(batch(1, patch(3, notes="x"))))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            connection = await aiormq.connect(settings.amqp_url)
            try:
                channel = await connection.channel()
                await channel.queue_unbind(
                    settings.topology.requests_queue, settings.topology.requests_exchange, "#"
                )
            finally:
                await connection.close()

            with pytest.raises(UnroutableError, match="unroutable"):
                await publisher.publish(request)
