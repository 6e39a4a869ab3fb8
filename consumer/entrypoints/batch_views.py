"""`batchops batches show|list`: stored batches for operators, as text or JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.adapters import queries
from consumer.adapters.database import in_transaction
from consumer.domain.batch import BatchState
from consumer.entrypoints.summary import render_result
from contracts import OperationResult, RejectionReason


@dataclass(frozen=True, slots=True)
class BatchView:
    """One stored batch: its record (`queries.SUMMARY_COLUMNS`) plus the derived figures."""

    row: dict[str, Any]

    @property
    def state(self) -> BatchState:
        return queries.batch_state(self.row)

    def as_json(self) -> dict[str, Any]:
        """The fields of the HTTP API's batch summary (without the display labels)."""
        return {key: _plain(value) for key, value in queries.with_figures(self.row).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def load_batch(
    database_url: str, batch_id: UUID
) -> tuple[BatchView, list[OperationResult]] | None:
    async def load(conn: AsyncConnection) -> tuple[BatchView, list[OperationResult]] | None:
        row = await queries.batch_summary(conn, batch_id)
        if row is None:
            return None
        return BatchView(row), await queries.batch_results(conn, batch_id)

    return await in_transaction(database_url, load)


async def load_history(
    database_url: str, where: queries.HistoryFilter, limit: int
) -> tuple[int, list[BatchView]]:
    count, rows = await in_transaction(
        database_url, lambda conn: queries.history(conn, where, limit=limit, offset=0)
    )
    return count, [BatchView(row) for row in rows]


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def render_batch(view: BatchView, results: Sequence[OperationResult]) -> str:
    state, row = view.state, view.row
    duration = f"{state.duration_seconds:.3f}s" if state.duration_seconds is not None else "-"
    handler = f" (handler {row['handler']})" if row["handler"] else ""
    lines = [
        f"batch {state.batch_id}",
        f"  status       {state.status.value.upper()}",
        f"  type         {state.operation_type}{handler}, mode {state.mode.value}",
        f"  actor        {state.actor_id}",
        f"  correlation  {row['correlation_id'] or '-'}",
        f"  operations   {state.total}: {state.completed} succeeded, {state.failed} failed, "
        f"{state.skipped} skipped",
        f"  success rate {state.success_rate:.2f}%   progress {state.progress:.2f}%",
        f"  created      {_when(state.created_at)}",
        f"  started      {_when(state.started_at)}",
        f"  completed    {_when(state.completed_at)}   duration {duration}",
        *_rejection_lines(row),
        *([f"  webhook      {describe_webhook(row['webhook'])}"] if row.get("webhook") else []),
        "results:" if results else "results: none yet",
        *(render_result(result) for result in results),
    ]
    return "\n".join(lines)


def describe_webhook(
    webhook: Mapping[str, Any], when: Callable[[datetime | None], str] = _when
) -> str:
    """A batch's webhook in one line: where it goes and how its delivery stands (`webhook`
    as the batch record holds it, timestamps as JSON text, written by `when`)."""
    tries = webhook["attempts"]
    counted = f"{tries} {'try' if tries == 1 else 'tries'}"
    if webhook.get("last_status") is not None:
        counted += f", last answer {webhook['last_status']}"
    if webhook.get("delivered_at"):
        state = f"delivered {when(_moment(webhook['delivered_at']))}"
    elif webhook.get("given_up_at"):
        state = f"given up {when(_moment(webhook['given_up_at']))}"
    elif tries == 0:
        state = "due, not tried yet"
    else:
        state = "not delivered yet, to be tried again"
    return f"{webhook['url']}: {state} ({counted})"


def _moment(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _rejection_lines(row: dict[str, Any]) -> list[str]:
    if not row.get("code"):
        return []
    reasons = [
        f"    {reason.describe()}"
        for reason in RejectionReason.from_errors(row.get("errors") or [])
    ]
    return [f"  rejected     {row['code']}", *reasons]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join(line(cells).rstrip() for cells in [headers, *rows])


def render_history(count: int, views: Sequence[BatchView]) -> str:
    if not views:
        return "no batches match"
    headers = ["BATCH", "CREATED", "TYPE", "STATUS", "SUCCEEDED", "FAILED", "SKIPPED", "ACTOR"]
    rows = [
        [
            str(state.batch_id),
            _when(state.created_at),
            state.operation_type,
            state.status.value,
            f"{state.completed}/{state.total}",
            str(state.failed),
            str(state.skipped),
            str(state.actor_id),
        ]
        for state in (view.state for view in views)
    ]
    return f"{render_table(headers, rows)}\n{len(views)} of {count} matching batches, newest first"
