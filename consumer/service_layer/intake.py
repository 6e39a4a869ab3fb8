"""Decide whether a delivered message is an acceptable batch request (docs/contract.md,
"Batch request"), and what a refusal names when it is not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Container, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from consumer.domain.grants import Grant
from contracts import (
    UNKNOWN_OPERATION_TYPE,
    BatchRequest,
    ErrorCode,
    Mode,
    OperationType,
    RejectionReason,
    rejection_event_id,
)
from contracts.requests import MAX_ID, is_handler_name

# How much of a body that is too large or not valid JSON is read for its batch_id and type.
PEEK_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the consumer needs of one broker delivery, free of any broker library."""

    body: bytes
    user_id: str | None
    message_id: str | None = None
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
    # Derived from the refused message: a redelivered copy re-uses it, another message cannot.
    event_id: UUID
    # The request's fingerprint when the body is a valid request, else a digest of its bytes:
    # a later message with the same batch_id and another body is then a CONFLICT.
    fingerprint: bytes
    # What the record of the rejected batch holds (see `recordable`), as far as the body says.
    actor_id: int | None = None
    mode: Mode = Mode.CONTINUE
    handler: str | None = None

    @property
    def recordable(self) -> bool:
        """Stored as a `rejected` batch when the body named a valid batch_id and actor_id;
        `CONFLICT` never is: the batch_id belongs to the first batch."""
        return (
            self.code is not ErrorCode.CONFLICT
            and self.batch_id is not None
            and self.actor_id is not None
        )


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    max_body_bytes: int
    max_operations: int
    allowed_publishers: Collection[str]
    operation_types: Container[str]
    custom_handlers: Container[str]
    # The actors each broker user may act for; None: every publisher may act for anyone.
    grants: Mapping[str, Grant] | None = None


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
            parse=False,
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
    problems = _policy_problems(request, policy)
    return _reject(delivery, problems, fingerprint(request)) if problems else request


def _policy_problems(request: BatchRequest, policy: IntakePolicy) -> list[RejectionReason]:
    """What this deployment refuses in a request that is valid on the wire."""
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
    return problems


def conflict(delivery: Delivery, request: BatchRequest) -> Rejection:
    """A batch_id re-used with another body: refused, the first batch untouched."""
    reason = _reason(
        "batch_id_conflict",
        f"batch {request.batch_id} was already submitted with a different body",
        "batch_id",
    )
    return _refuse(delivery, request, ErrorCode.CONFLICT, reason)


def denied(delivery: Delivery, request: BatchRequest) -> Rejection:
    """A request for an actor that BATCHOPS_PUBLISHER_GRANTS does not grant its publisher."""
    reason = _reason(
        "actor_not_granted",
        f"broker user {delivery.user_id!r} may not act for actor {request.actor_id}",
        "actor_id",
    )
    return _refuse(delivery, request, ErrorCode.PERMISSION_DENIED, reason)


def _refuse(
    delivery: Delivery, request: BatchRequest, code: ErrorCode, reason: RejectionReason
) -> Rejection:
    return Rejection(
        code=code,
        errors=[reason],
        batch_id=request.batch_id,
        operation_type=request.operation_type.value,
        event_id=rejection_event_id(delivery.body, delivery.message_id),
        actor_id=request.actor_id,
        mode=request.mode,
        handler=request.handler,
        fingerprint=fingerprint(request),
    )


def _reject(
    delivery: Delivery,
    errors: list[RejectionReason],
    request_fingerprint: bytes | None = None,
    *,
    parse: bool = True,
) -> Rejection:
    # Name the batch and type in the event when the body lets us, even though it was refused
    # (a body over the limit is not parsed whole: only its first bytes are read).
    raw = _named_fields(delivery.body) if parse else _leading_fields(_head(delivery.body))
    operation_type = raw.get("operation_type")
    if operation_type not in OperationType.__members__.values():
        operation_type = UNKNOWN_OPERATION_TYPE
    mode = raw.get("mode", Mode.CONTINUE.value)
    handler = raw.get("handler")
    return Rejection(
        code=ErrorCode.VALIDATION_ERROR,
        errors=errors,
        batch_id=as_uuid(raw.get("batch_id")),
        operation_type=str(operation_type),
        event_id=rejection_event_id(delivery.body, delivery.message_id),
        actor_id=_as_id(raw.get("actor_id")),
        mode=Mode(mode) if mode in Mode.__members__.values() else Mode.CONTINUE,
        handler=handler if is_handler_name(handler) else None,
        fingerprint=request_fingerprint or _body_fingerprint(delivery.body, parse=parse),
    )


def _body_fingerprint(body: bytes, *, parse: bool) -> bytes:
    """The request's fingerprint when the body is a valid request refused for another reason
    (so that the same request sent again once that is fixed is recognised), else the body's."""
    if parse:
        try:
            return fingerprint(BatchRequest.model_validate_json(body))
        except ValidationError:
            pass
    return hashlib.sha256(body).digest()


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body decoded, when it is a JSON object; None otherwise (not JSON, too deep, or
    JSON of another kind)."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def peek_actor(body: bytes) -> int | None:
    """The actor_id the body names, if a valid one, without validating the rest (fair share
    needs nothing else before the batch runs)."""
    return _as_id(_named_fields(body).get("actor_id"))


def peek_batch(body: bytes) -> tuple[UUID, int] | None:
    """The batch_id and actor_id the body names, None unless both are valid, without
    validating the rest (what a request needs to wait its turn in the database). Read from
    the body's first fields, where every producer of the publisher library puts them: this
    runs for every delivery, and decoding the whole body would double the executor's work;
    only a body that puts them further on is decoded whole."""
    fields = _leading_fields(_head(body))
    if "batch_id" not in fields or "actor_id" not in fields:
        fields = _named_fields(body)
    batch_id, actor = as_uuid(fields.get("batch_id")), _as_id(fields.get("actor_id"))
    return None if batch_id is None or actor is None else (batch_id, actor)


def _named_fields(body: bytes) -> dict[str, Any]:
    """The body's top-level fields when it is a JSON object; otherwise those its first
    PEEK_BYTES spell out whole (a body too large or cut short still names its batch)."""
    raw = json_object(body)
    return _leading_fields(_head(body)) if raw is None else raw


def _head(body: bytes) -> str:
    # A character cut in two at the end is dropped; the field it belonged to is incomplete.
    return body[:PEEK_BYTES].decode("utf-8", errors="ignore")


def field_of(body: bytes, name: str) -> Any:
    """Top-level field `name` of a JSON object body, or None. Found among the first fields
    without decoding the rest when it is there, as in every event this service writes (its
    ids come first, a completion's results last); else read from the whole body."""
    for key, value in _leading_pairs(_head(body)):
        if key == name:
            return value
    return (json_object(body) or {}).get(name)


def _leading_fields(head: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in _leading_pairs(head):
        fields.setdefault(key, value)
    return fields


def _leading_pairs(head: str) -> Iterator[tuple[str, Any]]:
    """Top-level `"key": value` pairs of a JSON object, in order, up to the first that is not
    complete in `head` (values are decoded one at a time, so nothing nested is mistaken for
    a top-level field)."""
    decoder = json.JSONDecoder()
    position = _skip_space(head, 0)
    if not head.startswith("{", position):
        return
    position += 1
    try:
        while True:
            key, position = decoder.raw_decode(head, _skip_space(head, position))
            position = _skip_space(head, position)
            if not isinstance(key, str) or not head.startswith(":", position):
                return
            value, position = decoder.raw_decode(head, _skip_space(head, position + 1))
            yield key, value
            position = _skip_space(head, position)
            if not head.startswith(",", position):
                return
            position += 1
    except (ValueError, RecursionError):
        return


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _as_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID:
        return value
    return None


def as_uuid(value: object) -> UUID | None:
    """`value` as a UUID if it is a string spelling one, else None."""
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _reason(kind: str, message: str, *loc: str | int) -> RejectionReason:
    return RejectionReason(loc=list(loc), msg=message, type=kind)


def _reasons(exc: ValidationError) -> list[RejectionReason]:
    return RejectionReason.from_errors(exc.errors(include_url=False, include_input=False))
