"""Units of work carried through transient database faults (stamina does the retrying).

Two kinds of waiting, kept apart so that no fault that heals can fail healthy work:
- the database answers but refuses the transaction, or its connection broke under it: the
  transaction is tried again with jittered backoff for at most `RetryPolicy.timeout_seconds`,
  then the fault is raised (the executor reports the operation UNAVAILABLE);
- no connection can be made at all: nothing of that budget is spent; the work waits for the
  outage to end (DatabaseAvailability), however long it lasts, and starts afresh.
A retried transaction that had in fact committed finds its own result row and stops there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina
import structlog
from stamina.instrumentation import RetryDetails, RetryHook

from consumer.log_config import LogThrottle
from consumer.service_layer.availability import DatabaseAvailability
from consumer.service_layer.batch_run import Interrupted
from consumer.service_layer.faults import Classifier, Fault, describe
from consumer.service_layer.telemetry import Telemetry
from consumer.service_layer.unit_of_work import AbstractUnitOfWork

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # How long a transaction the database keeps refusing is retried before it is given up.
    timeout_seconds: float = 30.0
    base_seconds: float = 0.05
    max_seconds: float = 2.0
    # A cap on tries within that time, for tests that count them; None in production.
    attempts: int | None = None


class Transactions:
    """Runs units of work until they get through: the one place that retries database work."""

    def __init__(
        self,
        uow_factory: Callable[[], AbstractUnitOfWork],
        classify: Classifier,
        availability: DatabaseAvailability,
        policy: RetryPolicy,
    ) -> None:
        self._uow_factory = uow_factory
        self.classify = classify
        self.availability = availability
        self._policy = policy

    def unit_of_work(self) -> AbstractUnitOfWork:
        return self._uow_factory()

    async def run(self, work: Callable[[AbstractUnitOfWork], Awaitable[T]]) -> T:
        """`work(uow)` in a fresh unit of work (it commits what it must), retried whole."""

        async def attempt() -> T:
            async with self._uow_factory() as uow:
                return await work(uow)

        return await self.retry(attempt)

    async def retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it returns. Raises what is not transient at once, a refusal that
        outlived the policy's time, or Interrupted when a transient fault meets a shutdown."""
        while True:  # one round of retries per outage: an outage spends none of the budget
            try:
                return await self._through_refusals(attempt)
            except Exception as exc:
                fault = self.classify(exc)
                if fault.transient and self.availability.closed:
                    raise Interrupted("shut down while the database refused the work") from exc
                if fault is not Fault.UNREACHABLE:
                    raise
                await self.availability.wait_until_reachable(exc)

    async def _through_refusals(self, attempt: Callable[[], Awaitable[T]]) -> T:
        # The first try runs bare: almost every transaction gets through at once, and setting
        # up the retry machinery costs more CPU than a simple operation's own Python work. A
        # refusal then enters it as its first failed try (logged, counted, waited after), so
        # the time budget starts at the first refusal.
        try:
            return await attempt()
        except Exception as exc:
            if not self._worth_retrying(exc):
                raise
            refusal: Exception | None = exc

        async def again() -> T:
            nonlocal refusal
            if refusal is not None:
                first, refusal = refusal, None
                raise first
            return await attempt()

        policy = self._policy
        async for trying in stamina.retry_context(
            on=self._worth_retrying,
            attempts=policy.attempts,
            timeout=policy.timeout_seconds,
            wait_initial=policy.base_seconds,
            wait_max=policy.max_seconds,
            wait_jitter=policy.base_seconds,
        ):
            with trying:
                return await again()
        raise AssertionError("unreachable: the last try returns or raises")

    def _worth_retrying(self, exc: Exception) -> bool:
        # Shutting down: the work in hand is left for redelivery rather than retried.
        return not self.availability.closed and self.classify(exc) in (Fault.REFUSED, Fault.LOST)


def instrument_retries(classify: Classifier, telemetry: Telemetry | None = None) -> None:
    """Replace stamina's default instrumentation (process-wide) with this service's."""
    stamina.instrumentation.set_on_retry_hooks(
        [_retry_log_hook(classify, telemetry or Telemetry())]
    )


def _retry_log_hook(classify: Classifier, telemetry: Telemetry) -> RetryHook:
    """A counter by fault and a rate-limited warning for transactions tried again."""
    throttle = LogThrottle(log)

    def on_retry(details: RetryDetails) -> None:
        fault = classify(details.caused_by)
        if fault not in (Fault.REFUSED, Fault.LOST):
            return  # an outage is logged as one; other loops (the relay's) log their own
        telemetry.transaction_retried(fault)
        throttle.warning(
            "transaction_retrying",
            fault=fault.value,
            error=describe(details.caused_by),
            retry=details.retry_num,
            waited_seconds=round(details.waited_so_far, 3),
        )

    return on_retry
