"""kill -9 of the consumer at three points of a batch, then a restart: the oracle holds.

The consumer is paused at an exact point by a row lock the test holds: an order's row
(`FOR UPDATE`) stops an operation before it changes anything; the batch row `FOR UPDATE`
stops an operation in the statement that writes its effect and its result, before its commit
(that statement takes the batch row `FOR KEY SHARE`); the batch row `FOR KEY SHARE` lets
operations commit but stops the final `SELECT … FOR UPDATE` that marks the batch terminal.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import yarl

from tests.faults.model import companions, notes_batch
from tests.faults.oracle import Allowances
from tests.faults.scenario import Scenario
from tests.faults.taps import SettleTrap

LOCK_ORDER = "SELECT 1 FROM orders WHERE id = :order_id FOR UPDATE"


class TestConsumerKilledMidBatch:
    async def test_an_operation_killed_before_its_commit_leaves_no_trace_and_runs_once_later(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as order_lock:
            await scenario.publish(target)
            for companion in companions():
                await scenario.publish(companion)
            await scenario.db.wait_for_results(target.batch_id, 1)
            await scenario.db.wait_until_blocked(order_lock)
            async with scenario.db.holding(
                "SELECT 1 FROM batch_operations WHERE batch_id = :b FOR UPDATE", b=target.batch_id
            ) as batch_lock:
                await order_lock.release()
                await scenario.db.wait_until_blocked(batch_lock)
                victims = await scenario.db.backends(exclude={order_lock.pid, batch_lock.pid})
                first.kill()
            await scenario.db.wait_until_gone(victims)

        assert await scenario.db.result_count(target.batch_id) == 1, (
            "operation 1 was written but not committed when the consumer died: "
            "its result row must have been rolled back"
        )
        notes = await scenario.db.scalar("SELECT notes FROM orders WHERE id = 6")
        assert notes == "", "operation 1's uncommitted note on order 6 must have been rolled back"
        await scenario.consumers.start()
        await scenario.check()

    async def test_a_consumer_killed_after_an_operation_committed_is_resumed_without_repeating_it(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as order_lock:
            await scenario.publish(target)
            for companion in companions():
                await scenario.publish(companion)
            await scenario.db.wait_for_results(target.batch_id, 1)
            await scenario.db.wait_until_blocked(order_lock)
            first.kill()

        second = await scenario.consumers.start()
        await scenario.check()
        assert '"batch_resumed"' in second.log(), "the unacknowledged batch is redelivered"

    async def test_a_consumer_killed_after_the_last_operation_but_before_the_batch_is_terminal(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=3) as order_lock:
            await scenario.publish(target)
            await scenario.db.wait_until_blocked(order_lock)  # claimed: its row exists
            async with scenario.db.holding(
                "SELECT 1 FROM batch_operations WHERE batch_id = :b FOR KEY SHARE",
                b=target.batch_id,
            ) as batch_lock:
                await order_lock.release()
                await scenario.db.wait_for_results(target.batch_id, 3)
                await scenario.db.wait_until_blocked(batch_lock)
                status = await scenario.db.scalar(
                    "SELECT status FROM batch_operations WHERE batch_id = :b", b=target.batch_id
                )
                assert status == "processing", "the batch must not be terminal yet"
                first.kill()

        await scenario.consumers.start()
        await scenario.check()


class TestConsumerKilledBeforeTheAck:
    async def test_a_terminal_batch_whose_ack_was_lost_is_not_run_again_and_its_completion_repeats(
        self, scenario: Scenario
    ) -> None:
        trap = SettleTrap()
        proxy = await scenario.proxy_to_broker(trap.tap)
        first = await scenario.consumers.start(BATCHOPS_AMQP_URL=scenario.amqp_url_via(proxy))
        target = notes_batch((3, "a0"), (6, "a1"), (3, "a2"))
        await scenario.publish(target)

        await asyncio.wait_for(trap.held.wait(), 20)
        status = await scenario.db.scalar(
            "SELECT status FROM batch_operations WHERE batch_id = :b", b=target.batch_id
        )
        assert status == "completed", "the consumer acks only once the batch is terminal"
        first.kill()
        proxy.drop()  # the broker sees the connection go without the ack: it redelivers
        second = await scenario.consumers.start()
        for companion in companions():
            await scenario.publish(companion)

        await scenario.check()
        assert '"duplicate_batch_completion_resent"' in second.log(), (
            "the redelivered request must be recognised as a finished batch"
        )

    async def test_a_rejected_request_whose_dead_lettering_was_lost_is_rejected_identically_again(
        self, scenario: Scenario
    ) -> None:
        trap = SettleTrap()
        proxy = await scenario.proxy_to_broker(trap.tap)
        first = await scenario.consumers.start(BATCHOPS_AMQP_URL=scenario.amqp_url_via(proxy))
        invalid = {"batch_id": str(uuid.uuid4()), "operation_type": "order_update"}
        await publish_raw(scenario, json.dumps({**invalid, "actor_id": 1, "operations": []}))

        await asyncio.wait_for(trap.held.wait(), 20)  # its rejection is in the outbox by now
        first.kill()
        proxy.drop()
        await scenario.consumers.start()

        await scenario.check(Allowances(rejections=1, dead_letters=1))


async def publish_raw(scenario: Scenario, body: str) -> None:
    """Publish a request the publisher library would refuse to send, as any producer could."""
    connection = await aio_pika.connect(scenario.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        requests = await channel.get_exchange(scenario.topology.requests_exchange)
        await requests.publish(
            aio_pika.Message(
                body.encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                user_id=yarl.URL(scenario.settings.amqp_url).user,
            ),
            routing_key="order_update",
        )
