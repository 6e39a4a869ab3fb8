"""Cancel with consumer processes: several consumers running the batches it stops, and a
consumer killed with `kill -9` before, during and after the cancel; every batch judged by the
oracle (a cancelled one: what committed before the cancel took effect stays, the rest is
SKIPPED "cancelled", nothing runs after it, one terminal status `cancelled`).

A cancel goes through the service's job control as an operator's (`batchops cancel`). Row locks
pin the consumer at an exact point, as in test_consumer_kills.py: an order's row (`FOR UPDATE`)
stops an operation before it changes anything; the batch row `FOR KEY SHARE` lets operations
commit but stops the statement that makes the batch terminal.
"""

from __future__ import annotations

from consumer.service_layer.job_control import Verdict
from contracts import Mode, completion_event_id
from tests.faults.cancelled import is_cancelled_skip
from tests.faults.model import companions, notes_batch
from tests.faults.scenario import Scenario

LOCK_ORDER = "SELECT 1 FROM orders WHERE id = :order_id FOR UPDATE"
LOCK_ORDERS = "SELECT 1 FROM orders WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
LOCK_BATCH_KEY = "SELECT 1 FROM batch_operations WHERE batch_id = :b FOR KEY SHARE"


async def shown(scenario: Scenario, batch_id: object) -> list[str]:
    """Each operation's outcome, `cancelled` for one SKIPPED for the cancel."""
    rows = await scenario.db.rows(
        'SELECT "index", outcome, error_code, event FROM operation_results'
        ' WHERE batch_id = :b ORDER BY "index"',
        b=batch_id,
    )
    return ["cancelled" if is_cancelled_skip(row) else row.outcome for row in rows]


class TestCancelWithSeveralConsumers:
    async def test_the_same_batch_run_by_two_consumers_at_once_stops_in_both(
        self, scenario: Scenario
    ) -> None:
        for _ in range(2):
            await scenario.consumers.start(BATCHOPS_PREFETCH="1")
        target = notes_batch((3, "s0"), (6, "s1"), (9, "s2"), (12, "s3"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as lock:
            await scenario.publish(target, times=2)
            await scenario.db.wait_for_results(target.batch_id, 1)
            # Both copies wait inside operation 1, one consumer each.
            await scenario.db.wait_until_blocked(lock, count=2)

            assert await scenario.cancel(target.batch_id) is Verdict.ACCEPTED

        report = await scenario.check()
        assert await shown(scenario, target.batch_id) == ["succeeded"] + ["cancelled"] * 3
        assert report.copies[completion_event_id(target.batch_id)] == 2, (
            "both runs must have reached the end, each publishing the one stored completion"
        )

    async def test_batches_spread_over_two_consumers_stop_where_each_was_and_the_others_finish(
        self, scenario: Scenario
    ) -> None:
        for _ in range(2):
            await scenario.consumers.start(BATCHOPS_PREFETCH="2")
        # Four batches, each waiting inside its operation 1 on an order of its own; two of
        # them are cancelled there, whichever consumer holds them.
        modes = {3: Mode.CONTINUE, 5: Mode.ATOMIC, 7: Mode.STOP_ON_ERROR, 9: Mode.CONTINUE}
        batches = [
            notes_batch((o, f"b{o}-0"), (o + 1, f"b{o}-1"), (o, f"b{o}-2"), mode=mode)
            for o, mode in modes.items()
        ]
        held = [request.operations[1].resource_id for request in batches]
        async with scenario.db.holding(LOCK_ORDERS, ids=held) as lock:
            for request in batches:
                await scenario.publish(request)
            await scenario.db.wait_until_blocked(lock, count=len(batches))
            for request in batches[:2]:
                assert await scenario.cancel(request.batch_id) is Verdict.ACCEPTED

        await scenario.check()
        assert [await shown(scenario, r.batch_id) for r in batches] == [
            ["succeeded", "cancelled", "cancelled"],
            ["cancelled"] * 3,  # atomic: rolled back whole
            ["succeeded"] * 3,
            ["succeeded"] * 3,
        ]


class TestCancelAcrossAConsumerCrash:
    async def test_a_batch_cancelled_while_its_consumer_is_dead_runs_nothing_more_after_a_restart(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "d0"), (6, "d1"), (3, "d2"), (21, "d3"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as lock:
            await scenario.publish(target)
            for companion in companions():
                await scenario.publish(companion)
            await scenario.db.wait_for_results(target.batch_id, 1)
            await scenario.db.wait_until_blocked(lock)
            victims = await scenario.db.backends(exclude={lock.pid})
            first.kill()
        await scenario.db.wait_until_gone(victims)

        assert await scenario.cancel(target.batch_id) is Verdict.ACCEPTED
        second = await scenario.consumers.start()

        await scenario.check()
        assert await shown(scenario, target.batch_id) == ["succeeded"] + ["cancelled"] * 3
        assert '"batch_resumed"' in second.log(), "the unacknowledged batch is redelivered"

    async def test_a_consumer_killed_after_the_cancel_but_before_it_noticed_leaves_it_cancelled(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "e0"), (6, "e1"), (9, "e2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as lock:
            await scenario.publish(target)
            await scenario.db.wait_for_results(target.batch_id, 1)
            await scenario.db.wait_until_blocked(lock)
            victims = await scenario.db.backends(exclude={lock.pid})  # the consumer's
            assert await scenario.cancel(target.batch_id) is Verdict.ACCEPTED
            first.kill()
        await scenario.db.wait_until_gone(victims)
        await scenario.consumers.start()

        await scenario.check()
        assert await shown(scenario, target.batch_id) == ["succeeded", "cancelled", "cancelled"]

    async def test_an_atomic_batch_whose_consumer_died_mid_run_is_cancelled_whole(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "x0"), (6, "x1"), (9, "x2"), mode=Mode.ATOMIC)
        async with scenario.db.holding(LOCK_ORDER, order_id=9) as lock:
            await scenario.publish(target)
            await scenario.db.wait_until_blocked(lock)  # operations 0 and 1 ran, uncommitted
            victims = await scenario.db.backends(exclude={lock.pid})
            first.kill()
        await scenario.db.wait_until_gone(victims)

        assert await scenario.cancel(target.batch_id) is Verdict.ACCEPTED
        await scenario.consumers.start()

        await scenario.check()
        assert await shown(scenario, target.batch_id) == ["cancelled"] * 3

    async def test_a_consumer_killed_after_recording_the_cancel_but_before_finishing_is_finished(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "r0"), (6, "r1"), (9, "r2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=6) as order_lock:
            await scenario.publish(target)
            await scenario.db.wait_for_results(target.batch_id, 1)
            await scenario.db.wait_until_blocked(order_lock)
            victims = await scenario.db.backends(exclude={order_lock.pid})  # the consumer's
            assert await scenario.cancel(target.batch_id) is Verdict.ACCEPTED
            async with scenario.db.holding(LOCK_BATCH_KEY, b=target.batch_id) as batch_lock:
                await order_lock.release()
                # The skips of the cancel commit; making the batch terminal waits on the lock.
                await scenario.db.wait_for_results(target.batch_id, 3)
                await scenario.db.wait_until_blocked(batch_lock)
                first.kill()
        await scenario.db.wait_until_gone(victims)
        status = await scenario.db.scalar(
            "SELECT status FROM batch_operations WHERE batch_id = :b", b=target.batch_id
        )
        assert status == "processing", "the batch must not be terminal before the restart"
        second = await scenario.consumers.start()

        await scenario.check()
        assert await shown(scenario, target.batch_id) == ["succeeded", "cancelled", "cancelled"]
        assert "Traceback" not in second.log(), second.log()[-4000:]

    async def test_a_batch_whose_operations_all_committed_before_its_consumer_died_is_not_cancelled(
        self, scenario: Scenario
    ) -> None:
        first = await scenario.consumers.start()
        target = notes_batch((3, "z0"), (6, "z1"), (3, "z2"))
        async with scenario.db.holding(LOCK_ORDER, order_id=3) as order_lock:
            await scenario.publish(target)
            await scenario.db.wait_until_blocked(order_lock)  # claimed: its row exists
            async with scenario.db.holding(LOCK_BATCH_KEY, b=target.batch_id) as batch_lock:
                await order_lock.release()
                await scenario.db.wait_for_results(target.batch_id, 3)
                await scenario.db.wait_until_blocked(batch_lock)
                victims = await scenario.db.backends(exclude={order_lock.pid, batch_lock.pid})
                first.kill()
        await scenario.db.wait_until_gone(victims)

        assert await scenario.cancel(target.batch_id) is Verdict.REFUSED, (
            "every operation had its result: only finishing was left, nothing to cancel"
        )
        cancel_at = await scenario.db.scalar(
            "SELECT cancel_requested_at FROM batch_operations WHERE batch_id = :b",
            b=target.batch_id,
        )
        assert cancel_at is None, "a refused cancel changes nothing"
        await scenario.consumers.start()

        await scenario.check()
        assert await shown(scenario, target.batch_id) == ["succeeded"] * 3
