"""kill -9 of the consumer after a batch's terminal commit and before its webhook was
delivered: another consumer delivers it (at-least-once, never lost — docs/contract.md,
Webhooks). The batch comes in over the HTTP API's submission path, with a callback to a real
receiver on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.database import create_engine
from consumer.adapters.webhooks import webhook_secret
from consumer.entrypoints.http.submission import submit
from tests.faults.model import ADMIN, notes_batch
from tests.faults.scenario import Scenario
from tests.integration.helpers import eventually
from tests.receiver import HANG, Receiver, signature_is_valid

WEBHOOKS = {"BATCHOPS_WEBHOOK_ALLOW_PRIVATE": "true", "BATCHOPS_WEBHOOK_TIMEOUT_SECONDS": "1"}
# A consumer's worker taking due deliveries waits behind this lock (its UPDATE of webhooks).
SHARE_WEBHOOKS = "LOCK TABLE webhooks IN SHARE MODE"


@pytest.fixture
async def engine(scenario: Scenario) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(scenario.settings.database_url, pool_size=1)
    yield engine
    await engine.dispose()


async def delivered(scenario: Scenario, batch_id: uuid.UUID) -> tuple[int, int]:
    """(attempts, last_status) once the webhook is delivered."""

    async def done() -> bool:
        return bool(
            await scenario.db.scalar(
                "SELECT delivered_at IS NOT NULL FROM webhooks WHERE batch_id = :b", b=batch_id
            )
        )

    await eventually(done, timeout=30, what="the webhook delivered")
    (row,) = await scenario.db.rows(
        "SELECT attempts, last_status FROM webhooks WHERE batch_id = :b", b=batch_id
    )
    return int(row[0]), int(row[1])


async def terminal(scenario: Scenario, batch_id: uuid.UUID) -> bool:
    return bool(
        await scenario.db.scalar(
            "SELECT completion_event IS NOT NULL FROM batch_operations WHERE batch_id = :b",
            b=batch_id,
        )
    )


class TestConsumerKilledBeforeItsWebhookWasDelivered:
    async def test_killed_after_the_terminal_commit_before_any_try_another_consumer_delivers(
        self, scenario: Scenario, engine: AsyncEngine
    ) -> None:
        target = notes_batch((3, "a0"), (6, "a1"))
        async with Receiver() as receiver:
            first = await scenario.consumers.start(**WEBHOOKS)
            scenario.oracle.expect(target)  # judged by the oracle at the end, as published ones
            await submit(engine, scenario.publisher, target, None, receiver.url)
            async with scenario.db.holding(SHARE_WEBHOOKS) as lock:
                await eventually(
                    lambda: terminal(scenario, target.batch_id), what="the batch terminal"
                )
                await scenario.db.wait_until_blocked(lock, running="UPDATE webhooks")
                first.kill()
            assert receiver.received == [], "no try was made before the kill"

            await scenario.consumers.start(**WEBHOOKS)
            attempts, status = await delivered(scenario, target.batch_id)
            (received,) = await receiver.wait_for(1)

        assert (attempts, status) == (1, 200)
        async with engine.begin() as conn:
            assert signature_is_valid(await webhook_secret(conn, ADMIN), received)
        await scenario.check()

    async def test_killed_while_a_try_waits_for_the_receiver_the_delivery_is_tried_again(
        self, scenario: Scenario, engine: AsyncEngine
    ) -> None:
        target = notes_batch((3, "b0"))
        async with Receiver([HANG]) as receiver:
            first = await scenario.consumers.start(**WEBHOOKS)
            scenario.oracle.expect(target)  # judged by the oracle at the end, as published ones
            await submit(engine, scenario.publisher, target, None, receiver.url)
            await receiver.wait_for(1)
            first.kill()  # the receiver has the request; nobody will read its answer

            await scenario.consumers.start(**WEBHOOKS)
            attempts, status = await delivered(scenario, target.batch_id)
            first_try, second_try = await receiver.wait_for(2)

        assert (attempts, status) == (2, 200), "the cut-short try counts"
        assert first_try.body == second_try.body
        assert first_try.headers["batchops-event-id"] == second_try.headers["batchops-event-id"]
        await scenario.check()
