"""Human-readable rendering of completion and rejection events for the CLI."""

from __future__ import annotations

from contracts import BatchCompleted, BatchRejected, OperationResult


def render_result(result: OperationResult) -> str:
    head = (
        f"  #{result.index:<3} resource {result.resource_id:<8} "
        f"{result.outcome.value:<9} {result.status}"
    )
    if result.error is not None:
        return f"{head}  {result.error.code.value}: {result.error.message}"
    shown = ", ".join(f"{k}={v}" for k, v in (result.data or {}).items() if k != "id")
    return f"{head}  {shown}"


def render_completion(event: BatchCompleted | BatchRejected) -> str:
    if isinstance(event, BatchRejected):
        lines = [f"batch {event.batch_id} ({event.operation_type}): REJECTED {event.code.value}"]
        lines += [f"  - {reason.describe('message')}" for reason in event.errors]
        return "\n".join(lines)
    duration = f"{event.duration_seconds:.3f}s" if event.duration_seconds is not None else "-"
    lines = [
        f"batch {event.batch_id} ({event.operation_type}): {event.status.upper()}  "
        f"{event.completed_operations}/{event.total_operations} succeeded, "
        f"{event.failed_operations} failed, {event.skipped_operations} skipped  "
        f"success rate {event.success_rate:.2f}%  in {duration}",
        *(render_result(result) for result in event.results),
    ]
    return "\n".join(lines)
