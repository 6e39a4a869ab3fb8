"""BATCHOPS_SERIALIZE_BATCHES: batches run one at a time, in the order they are taken."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from consumer.bootstrap import Service, bootstrap
from consumer.config import Settings
from tests.integration.helpers import eventually, order, publish_raw
from tests.support import EventLog


@pytest.fixture
async def serialized(settings: Settings, events: EventLog) -> AsyncIterator[Service]:
    svc = bootstrap(settings.model_copy(update={"serialize_batches": True, "prefetch": 8}))
    task = asyncio.create_task(svc.run())
    await asyncio.wait_for(svc.started.wait(), 20)
    yield svc
    svc.stop()
    await asyncio.wait_for(task, 30)


def notes_batch(tag: str) -> dict[str, object]:
    return {
        "batch_id": str(uuid.uuid4()),
        "operation_type": "custom",
        "handler": "append_order_note",
        "actor_id": 1,
        "operations": [
            {"method": "POST", "resource_id": 3, "data": {"text": f"{tag}{i}"}} for i in range(5)
        ],
    }


@pytest.mark.usefixtures("serialized")
async def test_batches_on_the_same_order_run_one_after_another_in_queue_order(
    settings: Settings, events: EventLog
) -> None:
    bodies = [notes_batch(tag) for tag in "abcdef"]
    for body in bodies:
        await publish_raw(
            settings.amqp_url,
            settings.topology.requests_exchange,
            json.dumps(body).encode(),
            routing_key="custom",
        )

    for body in bodies:
        await events.completion(uuid.UUID(str(body["batch_id"])))

    async def all_notes() -> bool:
        notes: str = (await order(settings.database_url, 3)).notes
        return notes.count("\n") == 29

    await eventually(all_notes, what="30 notes on order 3")
    lines = (await order(settings.database_url, 3)).notes.split("\n")
    assert lines == [f"{tag}{i}" for tag in "abcdef" for i in range(5)], (
        "each batch's notes must be contiguous and the batches in publish order"
    )
