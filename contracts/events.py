"""Events published to the results exchange (DESIGN §4) and their stable ids.

Event models ignore unknown fields so that subscribers keep working when the contract grows.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ErrorCode

OPERATION_EVENT_TYPE: Final = "batchops.operation.v1"
BATCH_EVENT_TYPE: Final = "batchops.batch.v1"

# uuid5 namespace of every event id: re-publishing an event always gives it the same id.
_EVENT_NAMESPACE = uuid.UUID("6f1d8f6e-3c1a-5e8b-9a51-0b7c2f4d9e21")


def _is_none(value: object) -> bool:
    return value is None


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class BatchStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self not in (BatchStatus.PENDING, BatchStatus.PROCESSING)


class OperationError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: ErrorCode
    message: str
    type: str


class OperationResult(BaseModel):
    """Body of an `operation.*.*` event and each element of a completion's `results`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    event_type: Literal["batchops.operation.v1"] = OPERATION_EVENT_TYPE
    batch_id: uuid.UUID
    correlation_id: str | None = None
    operation_type: str
    index: int
    resource_id: int
    status: int
    success: bool
    outcome: Outcome
    # DESIGN §4: on failure `data` is absent (not null); on success there is no `error`.
    data: dict[str, Any] | None = Field(default=None, exclude_if=_is_none)
    error: OperationError | None = Field(default=None, exclude_if=_is_none)
    occurred_at: datetime


class BatchCompleted(BaseModel):
    """Body of a `batch.*.<completed|partial|failed>` event and of the reply_to message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    event_type: Literal["batchops.batch.v1"] = BATCH_EVENT_TYPE
    batch_id: uuid.UUID
    correlation_id: str | None = None
    operation_type: str
    status: Literal[BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED]
    total_operations: int
    completed_operations: int
    failed_operations: int
    skipped_operations: int
    success_rate: float
    progress: float
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime
    duration_seconds: float | None
    results: list[OperationResult]


class RejectionReason(BaseModel):
    """One reason a request was refused: where (`loc`), what (`msg`) and its kind (`type`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    loc: list[str | int]
    msg: str
    type: str


class BatchRejected(BaseModel):
    """Body of a `batch.*.rejected` event: the request was never executed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    event_type: Literal["batchops.batch.v1"] = BATCH_EVENT_TYPE
    batch_id: uuid.UUID | None
    correlation_id: str | None = None
    operation_type: str
    status: Literal[BatchStatus.REJECTED] = BatchStatus.REJECTED
    code: ErrorCode
    errors: list[RejectionReason]
    rejected_at: datetime


Event = OperationResult | BatchCompleted | BatchRejected


def parse_event(body: bytes | str) -> Event:
    """Decode any results-exchange body. Raises `pydantic.ValidationError` on a malformed one."""
    probe = _EventProbe.model_validate_json(body)
    if probe.event_type == OPERATION_EVENT_TYPE:
        return OperationResult.model_validate_json(body)
    if probe.status == BatchStatus.REJECTED:
        return BatchRejected.model_validate_json(body)
    return BatchCompleted.model_validate_json(body)


class _EventProbe(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_type: Literal["batchops.operation.v1", "batchops.batch.v1"]
    status: str | int | None = None


def operation_event_id(batch_id: uuid.UUID, index: int) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, f"{batch_id}:operation:{index}")


def completion_event_id(batch_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, f"{batch_id}:completion")


def rejection_event_id(request_key: str) -> uuid.UUID:
    """`request_key` identifies the refused message (its batch id and a digest of its body)."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{request_key}:rejection")
