"""`BATCHOPS_RATE_LIMIT_*` read into a limit of the `limits` library, or off."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from limits import RateLimitItem

OFF = "0"
_FORM = "write N/second, N/minute, N/hour or N/day (e.g. 30/minute), or 0 to turn it off"


def rate_limit(value: str) -> RateLimitItem | None:
    """The limit `value` spells, None for `0`. Raises ValueError saying how to write one."""
    # Imported here: `limits` takes a sixth of a second, which every command would pay.
    from limits import parse_many  # noqa: PLC0415

    if value.strip() == OFF:
        return None
    try:
        items = parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit: {_FORM}") from None
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(f"{value!r} is not one limit of at least 1 request: {_FORM}")
    return items[0]
