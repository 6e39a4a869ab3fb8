"""Decide whether a delivered message is an acceptable batch request (DESIGN §3)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from contracts import (
    UNKNOWN_OPERATION_TYPE,
    BatchRequest,
    ErrorCode,
    OperationType,
    RejectionReason,
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the consumer needs of one broker delivery, free of any broker library."""

    body: bytes
    user_id: str | None
    correlation_id: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    published_at: datetime | None = None
    # Times the broker handed this message out before (quorum queues' x-delivery-count).
    delivery_count: int = 0
    # W3C trace context of the producer, when it sent one.
    traceparent: str | None = None
    # A copy of a request the broker dead-lettered after its delivery limit: it runs once more,
    # alone, in case it was only a bystander of a crash; `give_up` when that run crashed too.
    dead_lettered: bool = False
    give_up: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    code: ErrorCode
    errors: list[RejectionReason]
    batch_id: UUID | None
    operation_type: str
    # Identifies the refused message so that a redelivered copy re-uses the same event id.
    request_key: str


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    max_body_bytes: int
    max_operations: int
    allowed_publishers: Collection[str]
    operation_types: Container[str]
    custom_handlers: Container[str]


def fingerprint(request: BatchRequest) -> bytes:
    """Digest of the request's meaning: equal for the same batch however it was spelled."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def accept(delivery: Delivery, policy: IntakePolicy) -> BatchRequest | Rejection:
    """The validated request, or why it is refused; never raises on bad input."""
    if len(delivery.body) > policy.max_body_bytes:
        return _reject(
            delivery,
            [
                _reason(
                    "body_too_large",
                    f"body is {len(delivery.body)} bytes; the limit is {policy.max_body_bytes}",
                )
            ],
            peek=False,
        )
    if not delivery.user_id:
        return _reject(
            delivery,
            [_reason("user_id_missing", "the AMQP user_id property is required", "user_id")],
        )
    if policy.allowed_publishers and delivery.user_id not in policy.allowed_publishers:
        return _reject(
            delivery,
            [
                _reason(
                    "publisher_not_allowed",
                    f"user {delivery.user_id!r} may not publish batches",
                    "user_id",
                )
            ],
        )
    try:
        request = BatchRequest.model_validate_json(delivery.body)
    except ValidationError as exc:
        return _reject(delivery, _reasons(exc))
    problems = []
    if request.operation_type.value not in policy.operation_types:
        problems.append(
            _reason(
                "unsupported_operation_type",
                f"this service does not handle {request.operation_type.value!r} yet",
                "operation_type",
            )
        )
    if len(request.operations) > policy.max_operations:
        problems.append(
            _reason(
                "too_many_operations",
                f"{len(request.operations)} operations; the limit is {policy.max_operations}",
                "operations",
            )
        )
    if (
        request.operation_type is OperationType.CUSTOM
        and request.handler not in policy.custom_handlers
    ):
        problems.append(
            _reason(
                "unknown_handler",
                f"no custom handler is registered as {request.handler!r}",
                "handler",
            )
        )
    return _reject(delivery, problems) if problems else request


def conflict(delivery: Delivery, request: BatchRequest) -> Rejection:
    """A batch_id re-used with another body: refused, the first batch untouched."""
    reason = _reason(
        "batch_id_conflict",
        f"batch {request.batch_id} was already submitted with a different body",
        "batch_id",
    )
    return Rejection(
        code=ErrorCode.CONFLICT,
        errors=[reason],
        batch_id=request.batch_id,
        operation_type=request.operation_type.value,
        request_key=f"{request.batch_id}:{hashlib.sha256(delivery.body).hexdigest()}",
    )


def _reject(delivery: Delivery, errors: list[RejectionReason], *, peek: bool = True) -> Rejection:
    # Name the batch and type in the event when the body lets us, even though it was refused.
    raw = _peek(delivery.body) if peek else {}
    batch_id = _as_uuid(raw.get("batch_id"))
    operation_type = raw.get("operation_type")
    if operation_type not in OperationType.__members__.values():
        operation_type = UNKNOWN_OPERATION_TYPE
    return Rejection(
        code=ErrorCode.VALIDATION_ERROR,
        errors=errors,
        batch_id=batch_id,
        operation_type=str(operation_type),
        request_key=f"{batch_id}:{hashlib.sha256(delivery.body).hexdigest()}",
    )


def _peek(body: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _as_uuid(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _reason(kind: str, message: str, *loc: str | int) -> RejectionReason:
    return RejectionReason(loc=list(loc), msg=message, type=kind)


def _reasons(exc: ValidationError) -> list[RejectionReason]:
    return [
        RejectionReason(loc=list(err["loc"]), msg=err["msg"], type=err["type"])
        for err in exc.errors(include_url=False, include_input=False)
    ]
