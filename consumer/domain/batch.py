"""The BatchOperation record's behaviour: counters, progress and the terminal status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from contracts import BatchStatus, Mode


class BatchStateError(Exception):
    """A call that the batch's current status does not allow (a bug in the caller)."""


@dataclass(slots=True)
class BatchState:
    batch_id: UUID
    operation_type: str
    actor_id: int
    mode: Mode
    total: int
    created_at: datetime
    status: BatchStatus = BatchStatus.PENDING
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # Asked to stop: it ends `cancelled`, whatever its operations' outcomes.
    cancel_requested: bool = False
    dry_run: bool = False
    retry_of: UUID | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.skipped

    @property
    def progress(self) -> float:
        """Finished operations as a percentage of the total, 2 places."""
        return percent(self.finished, self.total)

    @property
    def success_rate(self) -> float:
        """Succeeded operations as a percentage of the total, 2 places."""
        return percent(self.completed, self.total)

    @property
    def is_complete(self) -> bool:
        return self.status.is_terminal

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return round((self.completed_at - self.started_at).total_seconds(), 6)

    def complete(self, now: datetime) -> BatchStatus:
        """Close the batch once every operation has a result; returns the terminal status."""
        if self.finished != self.total:
            raise BatchStateError(f"{self.total - self.finished} operations have no result yet")
        if self.status.is_terminal:
            return self.status
        self.status = (
            BatchStatus.CANCELLED
            if self.cancel_requested
            else terminal_status(self.completed, self.total)
        )
        self.completed_at = now
        return self.status


def terminal_status(succeeded: int, total: int) -> BatchStatus:
    if succeeded == total:
        return BatchStatus.COMPLETED
    if succeeded == 0:
        return BatchStatus.FAILED
    return BatchStatus.PARTIAL


def percent(part: int, whole: int) -> float:
    return round(part * 100 / whole, 2) if whole else 0.0
