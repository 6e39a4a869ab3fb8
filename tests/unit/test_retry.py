"""Transactions through transient faults: refusals spend a bounded time, outages spend none and
are logged once; repeated warnings are rate-limited."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs

from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Interrupted
from consumer.service_layer.faults import DatabaseUnavailable
from consumer.service_layer.retry import RetryPolicy, Transactions, instrument_retries
from tests.unit.fakes import TransientFault, fake_classify

TIGHT = RetryPolicy(timeout_seconds=0.05, base_seconds=0.001, max_seconds=0.002)


class Flaky:
    """An attempt that raises `fault` until `failures` of them ran out."""

    def __init__(self, fault: Exception, failures: int) -> None:
        self.fault = fault
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.fault
        return "done"


def transactions(policy: RetryPolicy = TIGHT) -> tuple[Transactions, dict[str, bool]]:
    """Transactions whose availability probe answers as `state["down"]` says."""
    state = {"down": False}

    async def probe() -> None:
        if state["down"]:
            raise DatabaseUnavailable("down")

    availability = DatabaseAvailability(probe, probe_initial_seconds=0.001, probe_max_seconds=0.005)
    instrument_retries(fake_classify)
    return Transactions(lambda: None, fake_classify, availability, policy), state  # type: ignore[arg-type, return-value]


class TestRefusals:
    async def test_a_refusal_that_passes_is_retried_until_it_succeeds(self):
        tx, _ = transactions()
        attempt = Flaky(TransientFault("deadlock detected"), failures=2)

        assert await tx.retry(attempt) == "done"
        assert attempt.calls == 3

    async def test_a_refusal_that_outlives_the_time_budget_is_raised(self):
        tx, _ = transactions()
        attempt = Flaky(TransientFault("deadlock detected"), failures=10_000)

        with pytest.raises(TransientFault):
            await tx.retry(attempt)
        assert attempt.calls > 1

    async def test_a_bug_is_raised_at_once(self):
        tx, _ = transactions()
        attempt = Flaky(KeyError("status"), failures=1)

        with pytest.raises(KeyError):
            await tx.retry(attempt)
        assert attempt.calls == 1

    async def test_retries_are_logged_rate_limited(self):
        tx, _ = transactions(
            RetryPolicy(timeout_seconds=5, base_seconds=0.0001, max_seconds=0.0001)
        )
        attempt = Flaky(TransientFault("deadlock detected"), failures=20)

        with capture_logs() as logs:
            await tx.retry(attempt)

        retrying = [log for log in logs if log["event"] == "transaction_retrying"]
        assert len(retrying) == 1, f"one line per interval, not one per retry: {retrying}"
        assert retrying[0]["fault"] == "refused"


class TestOutages:
    async def test_an_outage_longer_than_the_budget_is_waited_out_and_logged_once(self):
        tx, state = transactions()
        state["down"] = True
        down = DatabaseUnavailable("cannot connect to the database: Connection refused")
        attempt = Flaky(down, failures=3)

        async def heal_later() -> None:
            await asyncio.sleep(0.2)  # four times the refusal budget
            state["down"] = False

        healing = asyncio.create_task(heal_later())
        with capture_logs() as logs:
            assert await tx.retry(attempt) == "done"
        await healing

        events = [log["event"] for log in logs]
        assert events.count("database_unreachable") == 1
        assert events.count("database_reachable") == 1
        assert "transaction_retrying" not in events, "an outage is one state, not retries"
        (back,) = [log for log in logs if log["event"] == "database_reachable"]
        assert back["outage_seconds"] >= 0.15

    async def test_a_failed_connection_to_a_database_that_answers_is_retried_at_once(self):
        tx, _ = transactions()
        attempt = Flaky(DatabaseUnavailable("one connection failed"), failures=1)

        with capture_logs() as logs:
            assert await tx.retry(attempt) == "done"

        assert "database_unreachable" not in [log["event"] for log in logs]

    async def test_shutdown_during_an_outage_interrupts_the_wait(self):
        tx, state = transactions()
        state["down"] = True
        availability = tx.availability
        attempt = Flaky(DatabaseUnavailable("down"), failures=10_000)

        waiting = asyncio.create_task(tx.retry(attempt))
        with capture_logs():
            await asyncio.wait_for(availability.changed(True), 1)
            availability.close()
            with pytest.raises(Interrupted):
                await asyncio.wait_for(waiting, 1)

    async def test_followers_see_the_outage_start_and_end(self):
        tx, state = transactions()
        availability = tx.availability
        state["down"] = True
        with capture_logs():
            assert await availability.check() is False
            assert await asyncio.wait_for(availability.changed(True), 1) is False
            state["down"] = False
            assert await asyncio.wait_for(availability.changed(False), 1) is True


class TestLogThrottle:
    def test_one_line_per_interval_and_the_next_says_how_many_were_suppressed(self):
        now = [0.0]
        with capture_logs() as logs:
            throttle = LogThrottle(structlog.get_logger(), interval=10, clock=lambda: now[0])
            for _ in range(5):
                throttle.warning("relay_pass_failed", error="refused")
            now[0] = 11
            throttle.warning("relay_pass_failed", error="refused")
            throttle.warning("watchdog_check_failed", error="closed")

        assert [(log["event"], log.get("suppressed")) for log in logs] == [
            ("relay_pass_failed", None),
            ("relay_pass_failed", 4),
            ("watchdog_check_failed", None),
        ]
