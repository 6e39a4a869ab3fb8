"""Per-user batch statistics and the retention rule, as plain functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consumer.domain.batch import percent


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One group of a user's batches: how many, and their operation counters summed."""

    status: str
    operation_type: str
    batches: int
    operations: int
    succeeded: int


@dataclass(slots=True)
class UserStats:
    total_batches: int = 0
    total_operations: int = 0
    succeeded_operations: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_operation_type: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Succeeded operations over all operations of the user's batches, in percent."""
        return percent(self.succeeded_operations, self.total_operations)


def summarize(rows: Iterable[StatsRow]) -> UserStats:
    stats = UserStats()
    for row in rows:
        stats.total_batches += row.batches
        stats.total_operations += row.operations
        stats.succeeded_operations += row.succeeded
        stats.by_status[row.status] = stats.by_status.get(row.status, 0) + row.batches
        stats.by_operation_type[row.operation_type] = (
            stats.by_operation_type.get(row.operation_type, 0) + row.batches
        )
    return stats


def retention_cutoff(now: datetime, older_than_days: float) -> datetime:
    """Terminal batches finished before this instant may be deleted."""
    if older_than_days < 0:
        raise ValueError("older_than_days must not be negative")
    return now - timedelta(days=older_than_days)
