"""The oracle itself: it must fail a run with a double effect, a diverging event copy, or a
batch that never finished; otherwise a passing fault scenario would prove nothing."""

from __future__ import annotations

import aio_pika
import pytest

from consumer.service_layer.job_control import Verdict
from contracts import Mode, operation_event_id
from tests.faults.model import notes_batch
from tests.faults.oracle import Allowances
from tests.faults.scenario import Scenario


class TestTheOracle:
    async def test_it_reports_an_effect_applied_twice_and_an_event_copy_with_another_body(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        batch = notes_batch((3, "a0"), (6, "a1"))
        await scenario.publish(batch)
        await scenario.db.wait_for_results(batch.batch_id, 2)
        # Forge the two faults the scenarios hunt for: operation 0 applied a second time, and
        # a re-publication of its event that differs from the first copy.
        await scenario.db.execute("UPDATE orders SET notes = notes || E'\\na0' WHERE id = 3")
        event_id = operation_event_id(batch.batch_id, 0)
        forged = (
            f'{{"event_id": "{event_id}", "batch_id": "{batch.batch_id}", "outcome": "failed"}}'
        )
        connection = await aio_pika.connect(scenario.settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            results = await channel.get_exchange(scenario.topology.results_exchange)
            await results.publish(
                aio_pika.Message(forged.encode(), message_id=str(event_id)),
                routing_key="operation.custom.succeeded",
            )

        with pytest.raises(AssertionError) as failed:
            await scenario.check()

        assert "order 3 is" in str(failed.value), "the double append must be reported"
        assert f"event {event_id}: 2 copies with 2 different bodies" in str(failed.value)

    async def test_it_reports_a_batch_that_never_reached_a_terminal_status(
        self, scenario: Scenario
    ) -> None:
        await scenario.publish(notes_batch((3, "a0")))  # no consumer runs

        with pytest.raises(AssertionError, match="not every batch reached a terminal status"):
            await scenario.check(Allowances(terminal_within=0.5))

    async def test_it_reports_an_operation_wrongly_failed_with_its_batch_and_index(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        batch = notes_batch((3, "a0"), (6, "a1"), (9, "a2"))
        await scenario.publish(batch)
        await scenario.db.wait_for_results(batch.batch_id, 3)
        # Forge what a fault must never cause: a healthy operation reported as a crash, with
        # its effect undone.
        await scenario.db.execute(
            "UPDATE operation_results SET outcome = 'failed', error_code = 'INTERNAL_ERROR'"
            ' WHERE batch_id = :b AND "index" = 1',
            b=batch.batch_id,
        )
        await scenario.db.execute("UPDATE orders SET notes = '' WHERE id = 6")

        with pytest.raises(AssertionError) as failed:
            await scenario.check()

        assert (
            f"wrongly failed: 1 operation(s) of 1 batch(es) ended INTERNAL_ERROR, UNAVAILABLE or "
            f"SKIPPED where the model without the fault predicts otherwise: batch "
            f"{batch.batch_id}: [1 INTERNAL_ERROR (the model: succeeded)]"
        ) in str(failed.value)

    async def test_it_lets_commuting_batches_land_in_either_order_but_not_a_line_twice(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        ab = notes_batch((3, "x-3"), (6, "x-6"), mode=Mode.ATOMIC)
        ba = notes_batch((6, "y-6"), (3, "y-3"), mode=Mode.ATOMIC)
        await scenario.publish_commuting([(ab, ba)])
        for request in (ab, ba):
            await scenario.db.wait_for_results(request.batch_id, 2)
        # Whichever ran first, order 3 holds both lines once; add one of them again.
        await scenario.db.execute("UPDATE orders SET notes = notes || E'\\ny-3' WHERE id = 3")
        notes_6 = await scenario.db.scalar("SELECT notes FROM orders WHERE id = 6")

        with pytest.raises(AssertionError) as failed:
            await scenario.check()

        assert "order 3 is" in str(failed.value), "the repeated line must be reported"
        assert "order 6" not in str(failed.value), (
            f"order 6 ({notes_6!r}) holds each line once, in some order: that is no problem"
        )


class TestTheOracleOnCancelledBatches:
    async def test_it_reports_an_operation_that_took_effect_after_the_cancel(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        batch = notes_batch((3, "a0"), (6, "a1"), (9, "a2"))
        async with scenario.db.holding("SELECT 1 FROM orders WHERE id = 6 FOR UPDATE") as lock:
            await scenario.publish(batch)
            await scenario.db.wait_for_results(batch.batch_id, 1)
            await scenario.db.wait_until_blocked(lock)
            assert await scenario.cancel(batch.batch_id) is Verdict.ACCEPTED
        await scenario.db.wait_for_results(batch.batch_id, 3)
        # Forge what a cancel must never let happen: operation 1, in hand when the cancel
        # came, committed after it all the same.
        await scenario.db.execute(
            "UPDATE operation_results SET outcome = 'succeeded', error_code = NULL,"
            " event = convert_to(jsonb_set(convert_from(event, 'UTF8')::jsonb - 'error',"
            " '{outcome}', '\"succeeded\"')::text, 'UTF8')"
            ' WHERE batch_id = :b AND "index" = 1',
            b=batch.batch_id,
        )
        await scenario.db.execute("UPDATE orders SET notes = 'a1' WHERE id = 6")

        with pytest.raises(AssertionError) as failed:
            await scenario.check()

        assert (
            f"batch {batch.batch_id} (cancelled): operations [1] were run at or after the moment "
            "the cancel took effect"
        ) in str(failed.value)

    async def test_it_reports_a_batch_that_went_on_although_its_cancel_was_accepted(
        self, scenario: Scenario
    ) -> None:
        await scenario.consumers.start()
        batch = notes_batch((3, "a0"), (6, "a1"))
        await scenario.publish(batch)
        await scenario.db.wait_for_results(batch.batch_id, 2)
        scenario.oracle.expect_cancelled(batch.batch_id)  # as if a cancel had been accepted

        with pytest.raises(AssertionError) as failed:
            await scenario.check()

        for problem in (
            "its cancel was accepted but is not recorded on the batch row",
            "no operation reports SKIPPED 'cancelled'",
            f"batch {batch.batch_id} is completed, but its cancel was accepted",
        ):
            assert problem in str(failed.value)
