"""The batch request a producer publishes (docs/contract.md, "Batch request"), validated
strictly at the edge."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    StrictBool,
    model_serializer,
    model_validator,
)

from contracts._serialization import LeavesOutSilentFields, leave_out

MAX_OPERATIONS = 50
MAX_BODY_BYTES = 256 * 1024
# How deep `data` may nest (objects and arrays); real operations need two or three levels.
MAX_DATA_DEPTH = 8
REQUEST_TYPE = "batchops.request.v1"


class OperationType(StrEnum):
    ORDER_UPDATE = "order_update"
    PROFESSIONAL_APPROVAL = "professional_approval"
    SERVICE_UPDATE = "service_update"
    USER_UPDATE = "user_update"
    BULK_DELETE = "bulk_delete"
    CUSTOM = "custom"


class Mode(StrEnum):
    CONTINUE = "continue"
    STOP_ON_ERROR = "stop_on_error"
    ATOMIC = "atomic"


class Method(StrEnum):
    PATCH = "PATCH"
    POST = "POST"
    DELETE = "DELETE"


# Ids are PostgreSQL integers; a larger number is refused here rather than failing later.
MAX_ID = 2**31 - 1
# Strict: "3" is not an id. Other fields are lax so that Python callers may pass strings
# for UUIDs and enums, exactly as they appear in JSON.
Id = Annotated[int, Strict(), Field(gt=0, le=MAX_ID)]
HANDLER_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MAX_HANDLER_LENGTH = 100
HandlerName = Annotated[
    str, Field(min_length=1, max_length=MAX_HANDLER_LENGTH, pattern=HANDLER_PATTERN)
]


def is_handler_name(value: object) -> bool:
    """True for a string that `HandlerName` accepts."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_HANDLER_LENGTH
        and re.fullmatch(HANDLER_PATTERN, value) is not None
    )


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _shallow(data: dict[str, Any]) -> dict[str, Any]:
    if _depth(data) > MAX_DATA_DEPTH:
        raise ValueError(f"data nests deeper than {MAX_DATA_DEPTH} levels")
    return data


class Operation(BaseModel):
    """One change to one resource; `data` is checked by the operation type's own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field(description="PATCH, POST or DELETE, as the operation type needs.")
    resource_id: Id = Field(description="Id of the order, professional, service or user.")
    data: Annotated[dict[str, Any], AfterValidator(_shallow)] = Field(
        default_factory=dict,
        description="The change; each operation type has its own fields (checked per operation: "
        "a mismatch fails that operation with VALIDATION_ERROR, not the request).",
    )


class BatchRequest(LeavesOutSilentFields):
    """A batch of 1 to 50 operations of one type, run in list order on behalf of `actor_id`."""

    # Described as validated: the serializer only leaves out fields that say nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_mode_override="validation")

    batch_id: UUID = Field(description="The idempotency key; also the AMQP message_id.")
    operation_type: OperationType = Field(description="Also the routing key.")
    handler: HandlerName | None = Field(
        None, description="Required with operation_type custom, and allowed only there."
    )
    actor_id: Id = Field(description="The marketplace user every operation is authorised for.")
    mode: Mode = Field(
        Mode.CONTINUE,
        description="continue: run every operation; stop_on_error: skip the rest after the "
        "first failure; atomic: one transaction, any failure rolls everything back.",
    )
    operations: list[Operation] = Field(
        min_length=1, max_length=MAX_OPERATIONS, description="Executed in list order."
    )
    dry_run: StrictBool = Field(
        False,
        description="true: validate, authorise and run every operation in one transaction that "
        "is rolled back; nothing changes, and only the completion is published "
        "(dryrun.<type>.<status>).",
    )
    retry_of: UUID | None = Field(
        None, description="The batch whose failed and skipped operations this one runs again."
    )

    @model_serializer(mode="wrap")
    def _leave_out_the_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Sent only when they say something: a consumer that predates them accepts the rest.
        return leave_out(handler(self), self, absent=("retry_of",), unless_true=("dry_run",))

    @model_validator(mode="after")
    def _handler_only_for_custom(self) -> Self:
        if self.operation_type is OperationType.CUSTOM and self.handler is None:
            raise ValueError("operation_type 'custom' needs a 'handler'")
        if self.operation_type is not OperationType.CUSTOM and self.handler is not None:
            raise ValueError("'handler' is only allowed with operation_type 'custom'")
        return self
