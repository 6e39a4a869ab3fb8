"""Events published to the results exchange (docs/contract.md, "Events") and their stable ids.

Event models ignore unknown fields so that subscribers keep working when the contract grows.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from contracts._serialization import LeavesOutSilentFields, leave_out
from contracts.errors import ErrorCode
from contracts.requests import MAX_OPERATIONS

OPERATION_EVENT_TYPE: Final = "batchops.operation.v1"
BATCH_EVENT_TYPE: Final = "batchops.batch.v1"

# uuid5 namespace of every event id: re-publishing an event always gives it the same id.
_EVENT_NAMESPACE = uuid.UUID("6f1d8f6e-3c1a-5e8b-9a51-0b7c2f4d9e21")


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
    # Stopped on request before every operation ran (the rest reported SKIPPED).
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (BatchStatus.PENDING, BatchStatus.PROCESSING)


EventId = Annotated[
    uuid.UUID,
    Field(
        description="Stable id of this event: the same on every re-publication (de-duplicate "
        "on it); also the AMQP message_id."
    ),
]
CorrelationId = Annotated[
    str | None, Field(description="The request's AMQP correlation_id, or null when it had none.")
]
Percent = Annotated[float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0, le=MAX_OPERATIONS)]


class OperationError(BaseModel):
    """Why an operation did not succeed; `type` is the fixed word of `code` (its error_type)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: ErrorCode
    message: str = Field(description="Human-readable; never holds internal details.")
    type: str = Field(description="One fixed word per code, e.g. PermissionError.")


class OperationResult(LeavesOutSilentFields):
    """Body of an `operation.*.*` event and each element of a completion's `results`."""

    # Described as validated: the serializer only leaves out fields that say nothing.
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_mode_override="validation")

    event_id: EventId
    event_type: Literal["batchops.operation.v1"] = OPERATION_EVENT_TYPE
    batch_id: uuid.UUID
    correlation_id: CorrelationId = None
    operation_type: str = Field(description="The batch's operation_type.")
    index: int = Field(ge=0, lt=MAX_OPERATIONS, description="Position in the request, from 0.")
    resource_id: int = Field(gt=0, description="The operation's resource_id.")
    status: int = Field(ge=200, le=599, description="200 on success, else the code's status.")
    success: bool
    outcome: Outcome
    # On failure `data` is absent (never null); on success there is no `error` at all.
    data: dict[str, Any] | None = Field(
        None, description="Success only: the resource as it is after the operation."
    )
    error: OperationError | None = Field(None, description="Failure or skip only.")
    occurred_at: datetime
    retry_of: uuid.UUID | None = Field(
        None, description="Only in a retry's events: the batch whose failures it runs again."
    )

    @model_serializer(mode="wrap")
    def _leave_out_the_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        return leave_out(handler(self), self, absent=("data", "error", "retry_of"))


class BatchCompleted(LeavesOutSilentFields):
    """Body of a `batch.*.<completed|partial|failed>` event and of the reply_to message."""

    # Described as validated: the serializer only leaves out fields that say nothing.
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_mode_override="validation")

    event_id: EventId
    event_type: Literal["batchops.batch.v1"] = BATCH_EVENT_TYPE
    batch_id: uuid.UUID
    correlation_id: CorrelationId = None
    operation_type: str
    status: Literal[
        BatchStatus.COMPLETED, BatchStatus.PARTIAL, BatchStatus.FAILED, BatchStatus.CANCELLED
    ] = Field(
        description="completed: every operation succeeded; failed: none did; cancelled: "
        "stopped on request before every operation ran; else partial."
    )
    total_operations: int = Field(ge=1, le=MAX_OPERATIONS)
    completed_operations: Count = Field(description="Operations that succeeded.")
    failed_operations: Count
    skipped_operations: Count
    success_rate: Percent = Field(description="completed / total x 100, 2 places.")
    progress: Percent = Field(description="(completed + failed + skipped) / total x 100.")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime
    duration_seconds: float | None = Field(ge=0, description="completed_at - started_at.")
    results: list[OperationResult] = Field(description="Every operation's result, by index.")
    dry_run: bool = Field(
        False,
        description="Only in a dry run's completion (true): the results say what would have "
        "happened; nothing changed.",
    )
    retry_of: uuid.UUID | None = Field(
        None, description="Only in a retry's completion: the batch whose failures it ran again."
    )

    @model_serializer(mode="wrap")
    def _leave_out_the_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        return leave_out(handler(self), self, absent=("retry_of",), unless_true=("dry_run",))


class RejectionReason(BaseModel):
    """One reason a request was refused: where (`loc`), what (`msg`) and its kind (`type`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    loc: list[str | int] = Field(description="Path to the offending part of the request.")
    msg: str
    type: str = Field(description="Machine-readable kind, e.g. missing or body_too_large.")

    @classmethod
    def from_errors(cls, errors: Iterable[Mapping[str, Any]]) -> list[RejectionReason]:
        """pydantic's errors (`ValidationError.errors()`) as reasons, without the offending
        input (it may be large, and the sender has it anyway)."""
        return [
            cls(loc=list(err.get("loc", ())), msg=str(err.get("msg", "")), type=err["type"])
            for err in errors
        ]

    def describe(self, whole: str = "request") -> str:
        """`where: what`, e.g. `operations.3.data: Field required`; `whole` names an empty
        path (the whole document)."""
        where = ".".join(str(part) for part in self.loc) or whole
        return f"{where}: {self.msg}"


class BatchRejected(BaseModel):
    """Body of a `batch.*.rejected` event: the request was never executed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: EventId
    event_type: Literal["batchops.batch.v1"] = BATCH_EVENT_TYPE
    batch_id: uuid.UUID | None = Field(
        description="The request's batch_id when its body named a valid one, else null."
    )
    correlation_id: CorrelationId = None
    operation_type: str = Field(
        description="The request's operation_type when valid, else `unknown`."
    )
    status: Literal[BatchStatus.REJECTED] = BatchStatus.REJECTED
    code: ErrorCode = Field(description="VALIDATION_ERROR, or CONFLICT for a re-used batch_id.")
    errors: list[RejectionReason] = Field(min_length=1)
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


def rejection_event_id(body: bytes, message_id: str | None) -> uuid.UUID:
    """The id of the rejection of one message, from its bytes and its AMQP `message_id`: a
    redelivery repeats it, any other message gets another (only identical bytes published
    twice without a `message_id` cannot be told apart)."""
    digest = hashlib.sha256(body).hexdigest()
    return uuid.uuid5(_EVENT_NAMESPACE, f"{message_id or ''}:{digest}:rejection")
