"""`batchops batches show|list` render a rejected batch with its code and reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from consumer.entrypoints.batch_views import BatchView, render_batch, render_history

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def a_rejected_row(**fields: Any) -> dict[str, Any]:
    return {
        "batch_id": uuid.UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10"),
        "correlation_id": "corr-1",
        "operation_type": "order_update",
        "handler": None,
        "actor_id": 3,
        "mode": "continue",
        "status": "rejected",
        "total_operations": 0,
        "completed_operations": 0,
        "failed_operations": 0,
        "skipped_operations": 0,
        "created_at": NOW,
        "started_at": None,
        "completed_at": NOW,
        "code": "VALIDATION_ERROR",
        "errors": [{"loc": ["mode"], "msg": "Input should be 'continue'", "type": "enum"}],
        "cancel_requested_at": None,
        "dry_run": False,
        "retry_of": None,
        **fields,
    }


def test_show_prints_the_code_and_every_reason_of_a_rejected_batch() -> None:
    text = render_batch(BatchView(a_rejected_row()), [])

    assert "status       REJECTED" in text
    assert "rejected     VALIDATION_ERROR" in text
    assert "    mode: Input should be 'continue'" in text


def test_show_json_carries_code_and_errors_and_zero_figures() -> None:
    document = BatchView(a_rejected_row()).as_json()

    assert (document["status"], document["code"]) == ("rejected", "VALIDATION_ERROR")
    assert document["errors"][0]["loc"] == ["mode"]
    assert (document["success_rate"], document["progress"]) == (0.0, 0.0)


def test_list_shows_a_rejected_batch_like_any_other() -> None:
    assert "rejected" in render_history(1, [BatchView(a_rejected_row())])


def test_a_batch_that_ran_shows_no_rejection_lines() -> None:
    row = a_rejected_row(status="completed", code=None, errors=None, total_operations=1)
    row["completed_operations"] = 1
    assert "rejected " not in render_batch(BatchView(row), [])
