"""A batch's record as columns to write, and as the StoredBatch read back."""

from __future__ import annotations

import json

from consumer.adapters.pg import Record
from consumer.adapters.queries import batch_state
from consumer.service_layer.unit_of_work import StoredBatch


def claimed_columns(batch: StoredBatch) -> dict[str, object]:
    state = batch.state
    return {
        "batch_id": state.batch_id,
        "operation_type": state.operation_type,
        "handler": batch.handler,
        "actor_id": state.actor_id,
        "mode": state.mode.value,
        "status": state.status.value,
        "total_operations": state.total,
        "fingerprint": batch.fingerprint,
        "correlation_id": batch.correlation_id,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "request": None if batch.request is None else json.dumps(batch.request),
        "dry_run": state.dry_run,
        "retry_of": state.retry_of,
    }


def stored_batch(row: Record) -> StoredBatch:
    state = batch_state(row)
    return StoredBatch(
        state=state,
        handler=row["handler"],
        fingerprint=row["fingerprint"],
        correlation_id=row["correlation_id"],
        completion_event=row["completion_event"],
        in_hand=row["in_hand"],
    )
