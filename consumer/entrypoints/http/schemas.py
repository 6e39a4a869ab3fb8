"""Request and response bodies of the HTTP API, as published in its OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
)

from contracts import (
    MAX_OPERATIONS,
    ErrorCode,
    Mode,
    Operation,
    OperationResult,
    OperationType,
    RejectionReason,
)
from contracts.requests import HandlerName


class BatchSubmission(BaseModel):
    """A batch request without `actor_id` (the token's user); `batch_id` is generated when
    absent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: UUID | None = None
    operation_type: OperationType
    handler: HandlerName | None = None
    mode: Mode = Mode.CONTINUE
    operations: list[Operation] = Field(min_length=1, max_length=MAX_OPERATIONS)
    dry_run: StrictBool = Field(
        False, description="Rehearse: run everything, keep nothing (also `?dry_run=true`)."
    )
    callback_url: str | None = Field(
        None,
        json_schema_extra={"format": "uri"},
        description="Where to POST the completion once the batch is terminal (http or https, "
        "a public address; docs/contract.md, Webhooks).",
    )


class Webhook(BaseModel):
    """The delivery of a batch's completion to its `callback_url`."""

    url: str
    attempts: int = Field(description="Every try, the successful one included.")
    last_status: int | None = Field(description="The receiver's status on the last try.")
    delivered_at: datetime | None
    given_up_at: datetime | None = Field(
        None, description="Set when the retries ran out without a 2xx answer."
    )


class BatchSummary(BaseModel):
    batch_id: UUID
    correlation_id: str | None
    operation_type: str
    operation_type_display: str
    handler: str | None
    actor_id: int
    mode: str
    status: str
    status_display: str
    total_operations: int
    completed_operations: int
    failed_operations: int
    skipped_operations: int
    success_rate: float
    progress: float
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    code: ErrorCode | None = Field(None, description="A rejected batch's error code.")
    errors: list[RejectionReason] | None = Field(
        None, description="Why a rejected batch was refused (its rejection event's errors)."
    )
    dry_run: bool = Field(False, description="A rehearsal: its results changed nothing.")
    retry_of: UUID | None = Field(None, description="The batch whose failures this one retries.")
    cancel_requested_at: datetime | None = Field(
        None, description="When a cancel was asked for (the batch ends `cancelled`)."
    )
    webhook: Webhook | None = Field(
        None,
        description="Only for a batch submitted with a `callback_url`.",
        # Absent, not null, without one (`exclude_if`: the reason for the pydantic 2.12 floor).
        exclude_if=lambda webhook: webhook is None,
    )


class BatchDetail(BatchSummary):
    results: list[OperationResult]


class HistoryPage(BaseModel):
    count: int
    limit: int
    offset: int
    results: list[BatchSummary]


class Stats(BaseModel):
    total_batches: int
    total_operations: int
    succeeded_operations: int
    success_rate: float
    by_status: dict[str, int]
    by_operation_type: dict[str, int]


class Accepted(BaseModel):
    batch_id: UUID
    status: Literal["accepted"] = "accepted"
    location: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    checks: dict[str, bool] | None = Field(None, description="/readyz: what answers, what not")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(default_factory=dict)
