"""How the oracle judges a batch whose cancel was accepted.

The operations that committed before the cancel took effect come first, each as the model
predicts it; every other one reports SKIPPED with "cancelled" in its message. Nothing was
recorded at or after the moment the cancel took effect, an atomic batch is rolled back whole,
and the batch's one terminal status is `cancelled`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from contracts import BatchRequest, ErrorCode, Mode, Outcome

CANCELLED_WORD = "cancelled"


def is_cancelled_skip(row: Any) -> bool:
    """A result row (outcome, error_code, event) that says: not run, the batch was cancelled."""
    if row.outcome != Outcome.SKIPPED.value or row.error_code != ErrorCode.SKIPPED.value:
        return False
    error = json.loads(row.event).get("error") or {}
    return CANCELLED_WORD in str(error.get("message", ""))


def ran_before_cancel(
    request: BatchRequest, rows: list[Any], cancel_requested_at: datetime | None
) -> tuple[int, list[str]]:
    """How many operations ran before the cancel took effect (the rows before the first
    SKIPPED "cancelled" one), and what is wrong with the way the batch stopped."""
    where = f"batch {request.batch_id} (cancelled)"
    problems: list[str] = []
    if cancel_requested_at is None:
        problems.append(f"{where}: its cancel was accepted but is not recorded on the batch row")
    ran = next((i for i, row in enumerate(rows) if is_cancelled_skip(row)), len(rows))
    if ran == len(rows):
        problems.append(
            f"{where}: no operation reports SKIPPED {CANCELLED_WORD!r}, although the cancel was "
            "accepted while operations were left to run"
        )
    late = [row.index for row in rows[ran:] if not is_cancelled_skip(row)]
    if late:
        problems.append(
            f"{where}: operations {late} follow the first one SKIPPED {CANCELLED_WORD!r} without "
            "being SKIPPED for the cancel themselves (work went on after the cancel took effect)"
        )
    if request.mode is Mode.ATOMIC and ran:
        problems.append(
            f"{where}: an atomic batch cancelled mid-run rolls back whole, but operations "
            f"0..{ran - 1} report the results of a run"
        )
    if cancel_requested_at is not None:
        after = [row.index for row in rows[:ran] if _recorded_at(row) >= cancel_requested_at]
        if after:
            problems.append(
                f"{where}: operations {after} were run at or after the moment the cancel took "
                f"effect ({cancel_requested_at.isoformat()}), and still took effect"
            )
    return ran, problems


def _recorded_at(row: Any) -> datetime:
    return datetime.fromisoformat(json.loads(row.event)["occurred_at"])
