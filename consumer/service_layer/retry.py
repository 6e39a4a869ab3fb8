"""Retry a transaction on transient faults with capped exponential backoff and full jitter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_seconds: float = 0.05
    max_seconds: float = 2.0


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `attempt` until it succeeds; re-raises a non-transient error at once, and a
    transient one after `policy.attempts` tries."""
    delay = policy.base_seconds
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except Exception as exc:
            if number == policy.attempts or not is_transient(exc):
                raise
            log.warning("transient_fault_retrying", attempt=number, error=repr(exc))
            await sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not cryptography
            delay = min(delay * 2, policy.max_seconds)
    raise AssertionError("unreachable: the last attempt returns or raises")
