"""Crashes inside the consumer: redelivery resumes, poison batches still finish
(docs/contract.md, Guarantees)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings
from consumer.service_layer.handlers import HANDLERS, OperationContext, OperationHandler
from consumer.service_layer.intake import Delivery
from contracts import BatchRequest, BatchStatus, ErrorCode, Operation
from publisher import BatchPublisher
from tests.integration.helpers import batch, dead_letters, eventually, order, patch, result_rows
from tests.support import EventLog


class SimulatedCrash(BaseException):
    """Stands for the process dying: nothing in the consumer may catch it."""


def crashing_on(resource_id: int, times: int) -> OperationHandler:
    """order_update, except that it crashes the first `times` runs on `resource_id`."""
    remaining = {"crashes": times}

    async def handler(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
        if operation.resource_id == resource_id and remaining["crashes"] > 0:
            remaining["crashes"] -= 1
            raise SimulatedCrash(f"crash on {resource_id}")
        return await HANDLERS["order_update"](ctx, operation)

    return handler


@pytest.fixture
async def running(settings: Settings, events: EventLog) -> AsyncIterator[list[Service]]:
    started: list[Service] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(handler: OperationHandler, **overrides: Any) -> Service:
        svc = bootstrap(settings.model_copy(update=overrides), handlers={"order_update": handler})
        task = asyncio.create_task(svc.run())
        tasks.append(task)
        ready = asyncio.create_task(svc.started.wait())
        await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # start-up failed: raise its error here
        assert ready.done(), "the service did not start within 20s"
        started.append(svc)
        return svc

    yield start  # type: ignore[misc]
    for svc in started:
        svc.stop()
    await asyncio.gather(*tasks, return_exceptions=True)


def three_operations() -> dict[str, Any]:
    return batch(6, patch(3, status="accepted"), patch(6, status="accepted"), patch(9, notes="n"))


class TestRedelivery:
    async def test_a_batch_crashed_between_operations_resumes_without_applying_any_twice(
        self, settings: Settings
    ) -> None:
        body = three_operations()
        request = BatchRequest.model_validate_json(json.dumps(body))
        crashing = bootstrap(settings, handlers={"order_update": crashing_on(6, times=1)})
        delivery = Delivery(body=json.dumps(body).encode(), user_id="guest")

        with pytest.raises(SimulatedCrash):
            await crashing.executor.handle(delivery)
        assert [r.index for r in await result_rows(settings.database_url, request.batch_id)] == [0]
        first = (await result_rows(settings.database_url, request.batch_id))[0]

        resumed = bootstrap(settings)
        await resumed.executor.handle(
            Delivery(body=delivery.body, user_id="guest", delivery_count=1)
        )
        await crashing.close()
        await resumed.close()

        rows = await result_rows(settings.database_url, request.batch_id)
        assert [(r.index, r.outcome) for r in rows] == [
            (0, "succeeded"),
            (1, "succeeded"),
            (2, "succeeded"),
        ], "accepting order 3 twice would have failed the second time with CONFLICT"
        assert rows[0] == first, "the operation committed before the crash must stay as it was"
        assert (await order(settings.database_url, 3)).status == "accepted"
        assert (await order(settings.database_url, 6)).status == "accepted"

    async def test_a_crash_inside_the_broker_consumer_is_redelivered_and_resumed(
        self, settings: Settings, events: EventLog, running: Any
    ) -> None:
        await running(crashing_on(6, times=1))
        request = BatchRequest.model_validate_json(json.dumps(three_operations()))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            await publisher.publish(request)

        completion = await events.completion(request.batch_id)

        assert completion.status is BatchStatus.COMPLETED
        assert [r.index for _, r in events.operations(request.batch_id)] == [0, 1, 2]


class TestPoisonMessage:
    async def test_a_batch_that_always_crashes_is_dead_lettered_and_still_finished(
        self, settings: Settings, events: EventLog, running: Any
    ) -> None:
        await running(crashing_on(6, times=1000))
        request = BatchRequest.model_validate_json(json.dumps(three_operations()))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            await publisher.publish(request)

        completion = await events.completion(request.batch_id)

        assert completion.status is BatchStatus.PARTIAL
        codes = [r.error.code if r.error else None for r in completion.results]
        assert codes == [None, ErrorCode.INTERNAL_ERROR, ErrorCode.SKIPPED]
        assert (await order(settings.database_url, 9)).notes == ""

        async def dead_lettered() -> bool:
            return (
                len(await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue)) == 1
            )

        await eventually(dead_lettered, what="the poison request in the dead-letter queue")
