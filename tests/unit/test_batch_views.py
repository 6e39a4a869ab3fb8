"""`batchops batches show|list` render a rejected batch with its code and reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.entrypoints.batch_views import (
    BatchView,
    describe_webhook,
    render_batch,
    render_history,
)

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


HOOK = {"url": "https://partner.example/hook", "last_status": None}
# Timestamps as the batch record holds them: JSON text from PostgreSQL's jsonb_build_object.
DELIVERED = "2026-11-30T10:00:03.412+00:00"


@pytest.mark.parametrize(
    ("webhook", "line"),
    [
        (
            {**HOOK, "attempts": 0, "delivered_at": None, "given_up_at": None},
            "https://partner.example/hook: due, not tried yet (0 tries)",
        ),
        (
            {**HOOK, "attempts": 1, "last_status": 500, "delivered_at": None},
            "https://partner.example/hook: not delivered yet, to be tried again"
            " (1 try, last answer 500)",
        ),
        (
            {**HOOK, "attempts": 3, "last_status": 200, "delivered_at": DELIVERED},
            "https://partner.example/hook: delivered 2026-11-30T10:00:03+00:00"
            " (3 tries, last answer 200)",
        ),
        (
            {**HOOK, "attempts": 9, "delivered_at": None, "given_up_at": DELIVERED},
            "https://partner.example/hook: given up 2026-11-30T10:00:03+00:00 (9 tries)",
        ),
    ],
)
def test_a_webhook_is_one_line_saying_how_it_stands(webhook: dict[str, Any], line: str) -> None:
    assert describe_webhook(webhook) == line


def test_show_prints_the_webhook_only_of_a_batch_that_has_one() -> None:
    webhook = {**HOOK, "attempts": 1, "last_status": 200, "delivered_at": DELIVERED}
    shown = render_batch(BatchView(a_rejected_row(webhook=webhook)), [])
    assert "  webhook      https://partner.example/hook: delivered" in shown
    assert "webhook" not in render_batch(BatchView(a_rejected_row()), [])
