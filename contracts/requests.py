"""The batch request a producer publishes (DESIGN §3), validated strictly at the edge."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

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
HandlerName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]


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

    method: Method
    resource_id: Id
    data: Annotated[dict[str, Any], AfterValidator(_shallow)] = Field(default_factory=dict)


class BatchRequest(BaseModel):
    """A batch of 1 to 50 operations of one type, run in list order on behalf of `actor_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: UUID
    operation_type: OperationType
    handler: HandlerName | None = None
    actor_id: Id
    mode: Mode = Mode.CONTINUE
    operations: list[Operation] = Field(min_length=1, max_length=MAX_OPERATIONS)

    @model_validator(mode="after")
    def _handler_only_for_custom(self) -> Self:
        if self.operation_type is OperationType.CUSTOM and self.handler is None:
            raise ValueError("operation_type 'custom' needs a 'handler'")
        if self.operation_type is not OperationType.CUSTOM and self.handler is not None:
            raise ValueError("'handler' is only allowed with operation_type 'custom'")
        return self
