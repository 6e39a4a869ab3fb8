"""`POST /api/v1/batch/{batch_id}/cancel` and `/retry`: job control over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.adapters import queries
from consumer.domain.model import Actor
from consumer.entrypoints.http import labels, problems
from consumer.entrypoints.http.schemas import Accepted, BatchDetail
from consumer.entrypoints.http.submission import submit
from consumer.service_layer.job_control import JobControl, Refused, Verdict
from publisher import BatchPublisher


async def cancel(
    engine: AsyncEngine, control: JobControl, batch_id: uuid.UUID, actor: Actor, lang: str
) -> JSONResponse:
    """202 with the batch as it is now; 404 for a batch the caller may not see (or, for a
    client or professional, one nobody has seen); 409 for one with nothing left to stop."""
    verdict = await control.cancel(batch_id, actor)
    if verdict is Verdict.NOT_FOUND:
        raise problems.ProblemError(404, f"batch {batch_id} not found")
    if verdict is Verdict.REFUSED:
        raise problems.ProblemError(
            409, f"batch {batch_id} is already finished: there is nothing left to cancel"
        )
    async with engine.connect() as conn:
        row = await queries.batch_summary(conn, batch_id)
        results = await queries.batch_results(conn, batch_id)
    body: dict[str, Any] = {"batch_id": str(batch_id)}
    if row is not None:  # cancelled in advance: a placeholder until its request arrives
        summary = labels.summarize(row, lang) | {"results": results}
        body = _json(summary)
    return JSONResponse(body, status_code=202)


async def retry(
    engine: AsyncEngine,
    publisher: BatchPublisher,
    control: JobControl,
    batch_id: uuid.UUID,
    actor: Actor,
) -> Accepted:
    """Publish a new batch of what `batch_id` did not get done; 404 / 409 as for cancel."""
    try:
        request = await control.retry_request(batch_id, actor)
    except Refused as refused:
        status = 404 if refused.verdict is Verdict.NOT_FOUND else 409
        raise problems.ProblemError(status, refused.reason) from None
    accepted = await submit(engine, publisher, request, wait=None)
    assert isinstance(accepted, Accepted)  # noqa: S101 - no wait: never a completion
    return accepted


def _json(summary: dict[str, Any]) -> dict[str, Any]:
    return BatchDetail.model_validate(summary).model_dump(mode="json")
