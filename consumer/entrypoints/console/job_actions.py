"""Cancel and retry from the batch page: which a batch allows, and the two form posts."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from consumer.entrypoints.console.session import form, viewer
from consumer.entrypoints.http import jobs
from consumer.entrypoints.http.problems import ProblemError
from consumer.service_layer.job_control import RETRYABLE, JobControl, Verdict
from contracts import BatchStatus

log = structlog.get_logger(__name__)
CANCELLABLE = frozenset({BatchStatus.PENDING, BatchStatus.PROCESSING})


def available_actions(row: dict[str, Any], has_request: bool) -> list[str]:
    """What the batch page offers: the results to download once there are any, a cancel while
    the batch may still stop, a retry of what a finished batch did not get done."""
    status = BatchStatus(row["status"])
    actions = [] if status is BatchStatus.REJECTED else ["download"]
    if status in CANCELLABLE and row["cancel_requested_at"] is None:
        actions.append("cancel")
    if status in RETRYABLE and not row["dry_run"] and has_request:
        actions.append("retry")
    return actions


def _to_batch(batch_id: uuid.UUID | str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"/console/batches/{batch_id}?notice={quote(notice)}", 303)


def _control(request: Request) -> JobControl:
    control: JobControl | None = request.app.state.context.job_control
    if control is None:
        raise ProblemError(503, "this process cannot cancel or retry batches")
    return control


async def cancel(request: Request, batch_id: uuid.UUID) -> RedirectResponse:
    who = await viewer(request)
    await form(request, who)  # checks the CSRF token
    verdict = await _control(request).cancel(batch_id, who.actor)
    log.info("console_batch_cancel", batch_id=str(batch_id), verdict=verdict.value)
    if verdict is Verdict.ACCEPTED:
        return _to_batch(batch_id, "cancel requested: the batch stops before its next operation")
    if verdict is Verdict.REFUSED:
        return _to_batch(batch_id, "not cancelled: the batch had nothing left to stop")
    return _to_batch(batch_id, "not cancelled: no such batch for you")


async def retry(request: Request, batch_id: uuid.UUID) -> RedirectResponse:
    """Publish the retry and show it (its page says which batch it retries)."""
    who = await viewer(request)
    await form(request, who)
    context = request.app.state.context
    try:
        accepted = await jobs.retry(
            context.engine, context.publisher, _control(request), batch_id, who.actor
        )
    except ProblemError as refused:
        return _to_batch(batch_id, f"not retried: {refused.detail}")
    log.info("console_batch_retry", batch_id=str(batch_id), retry=str(accepted.batch_id))
    return _to_batch(accepted.batch_id, f"published as the retry of {batch_id}")


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    routes.add_api_route("/console/batches/{batch_id}/cancel", cancel, methods=["POST"])
    routes.add_api_route("/console/batches/{batch_id}/retry", retry, methods=["POST"])
    return routes
