"""`POST /api/v1/batch/`: check the batch, store it `pending`, publish it with confirms, and
answer 202 with its Location (or its completion with `?wait`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters.callbacks import CallbackRefused, check
from consumer.adapters.submissions import Stored, forget_pending, store_pending
from consumer.adapters.webhooks import add_callback
from consumer.domain.model import Actor
from consumer.entrypoints.http import problems
from consumer.entrypoints.http.schemas import Accepted, BatchSubmission
from consumer.service_layer.intake import fingerprint
from contracts import BatchRejected, BatchRequest
from publisher import BatchPublisher, Completion, CompletionTimeout, PublishError

API = "/api/v1/batch"


def to_request(submission: BatchSubmission, actor: Actor, max_operations: int) -> BatchRequest:
    """The wire request of a submission by `actor`. Raises a 422 ProblemError when it is not
    one this service would accept."""
    try:
        request = BatchRequest.model_validate(
            {
                **submission.model_dump(exclude_none=True, exclude={"callback_url"}),
                "batch_id": submission.batch_id or uuid.uuid4(),
                "actor_id": actor.id,
            }
        )
    except ValidationError as exc:
        errors = problems.error_list(exc.errors(include_url=False, include_input=False))
        raise problems.ProblemError(422, "the batch is not valid", errors=errors) from None
    errors = [
        {"loc": ["body", *loc], "msg": "must not contain the NUL character", "type": "nul"}
        for loc in _nul_locations(request.model_dump(mode="json"), ())
    ]
    if len(request.operations) > max_operations:
        errors.append(
            {
                "loc": ["body", "operations"],
                "msg": f"{len(request.operations)} operations; the limit is {max_operations}",
                "type": "too_many_operations",
            }
        )
    if errors:
        raise problems.ProblemError(422, "the batch is not valid", errors=errors)
    return request


async def callback_of(submission: BatchSubmission, allow_private: bool) -> str | None:
    """The submission's `callback_url`, resolved and checked now (and again before each try).
    Raises a 422 ProblemError naming the field when it may not be used."""
    url = submission.callback_url
    if url is None:
        return None
    try:
        await check(url, allow_private=allow_private)
    except CallbackRefused as exc:
        error = {"loc": ["body", "callback_url"], "msg": str(exc), "type": "callback_refused"}
        raise problems.ProblemError(422, "the callback_url is refused", errors=[error]) from None
    return url


def _nul_locations(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    """Where a NUL character hides in a JSON value (in a key or a string)."""
    if isinstance(value, str) and "\x00" in value:
        yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield (*loc, key)
            yield from _nul_locations(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, (*loc, index))


async def submit(
    engine: AsyncEngine,
    publisher: BatchPublisher,
    request: BatchRequest,
    wait: int | None,
    callback_url: str | None = None,
) -> Accepted | Completion:
    """Store (with its checked `callback_url`), publish and (with `wait`) await the batch.
    Raises ProblemError 409 for a batch_id taken by another body, 503 when the broker does not
    confirm the request."""
    correlation_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        stored = await store_pending(
            conn,
            request,
            fingerprint=fingerprint(request),
            correlation_id=correlation_id,
            now=datetime.now(UTC),
        )
        if callback_url is not None and stored is Stored.NEW:
            await add_callback(conn, request.batch_id, callback_url)
    if stored is Stored.CONFLICT:
        raise problems.ProblemError(
            409, f"batch {request.batch_id} was already submitted with a different body"
        )
    accepted = Accepted(batch_id=request.batch_id, location=f"{API}/{request.batch_id}/")
    try:
        if not wait:
            await publisher.publish(request, correlation_id=correlation_id)
            return accepted
        try:
            return await publisher.publish_and_wait(
                request, timeout=wait, correlation_id=correlation_id
            )
        except CompletionTimeout:
            return accepted
    except PublishError as exc:
        if stored is Stored.NEW:
            async with engine.begin() as conn:
                await forget_pending(conn, request.batch_id)
        raise problems.ProblemError(503, f"the batch was not accepted: {exc}") from None


def rejected_problem(rejection: BatchRejected) -> problems.ProblemError:
    """A rejection that came back within `wait`: 409 for a re-used batch_id, else 422."""
    errors = [reason.model_dump() for reason in rejection.errors]
    status = 409 if rejection.code == "CONFLICT" else 422
    return problems.ProblemError(status, "the batch was rejected", errors=errors)
