"""Per-user budgets of HTTP API requests (`BATCHOPS_RATE_LIMIT_SUBMIT`, `_READ`), counted in the
memory of each API process: N processes behind a load balancer allow up to N times the limit."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Request
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from consumer.entrypoints.http import problems
from consumer.entrypoints.http.auth import CurrentActor
from consumer.rate_limit_setting import OFF, rate_limit


class Budget(StrEnum):
    SUBMIT = "submit"  # POST: submit, cancel, retry
    READ = "read"  # GET


class RateLimits:
    def __init__(self, *, submit: str = OFF, read: str = OFF) -> None:
        self._items = {Budget.SUBMIT: rate_limit(submit), Budget.READ: rate_limit(read)}
        self._texts = {Budget.SUBMIT: submit, Budget.READ: read}
        # A moving window: a slot frees exactly one period after the request that took it, so
        # Retry-After is exact and a burst at a window's edge cannot pass twice the limit.
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def spend(self, budget: Budget, user_id: int) -> int | None:
        """Count a request of `user_id` against `budget`: None when it is within the budget,
        else the whole seconds until a slot frees (and the refused request is not counted)."""
        item = self._items[budget]
        if item is None or self._limiter.hit(item, budget.value, str(user_id)):
            return None
        reset_at = self._limiter.get_window_stats(item, budget.value, str(user_id)).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def describe(self, budget: Budget) -> str:
        return self._texts[budget]


def within(budget: Budget) -> Callable[..., Awaitable[None]]:
    """A route dependency: the caller's token first (401 without one), then its budget (429,
    with Retry-After, before the route does anything)."""

    async def spend(request: Request, actor: CurrentActor) -> None:
        limits: RateLimits = request.app.state.context.rate_limits
        wait = limits.spend(budget, actor.id)
        if wait is not None:
            raise problems.ProblemError(
                429,
                f"over the {budget.value} rate limit of {limits.describe(budget)}; "
                f"retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    return spend
