"""The console's batch pages: the live list with its filters, one batch with every operation,
and the download of its results."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from consumer.adapters import queries
from consumer.adapters.console_queries import (
    BatchQuery,
    EventRecord,
    batch_events,
    batch_page,
    batch_request,
)
from consumer.entrypoints.console.job_actions import available_actions
from consumer.entrypoints.console.render import page
from consumer.entrypoints.console.session import Viewer, viewer
from consumer.entrypoints.http.labels import results_csv
from contracts import (
    BatchStatus,
    OperationResult,
    OperationType,
    completion_event_id,
    operation_event_id,
    operation_routing_key,
)

PAGE_SIZE = 25
FILTERS = ("status", "operation_type", "actor", "from", "to", "q")


@dataclass
class Filters:
    """The list's filters as typed, what they mean as a query, and what was not understood."""

    values: dict[str, str]
    query: BatchQuery
    problems: list[str] = field(default_factory=list)

    def link(self, **changes: str | int) -> str:
        kept = {k: v for k, v in {**self.values, **changes}.items() if v not in ("", None)}
        return urlencode(kept)


def _day(text: str, name: str, problems: list[str]) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError:
        problems.append(f"{name}: {text!r} is not a date (YYYY-MM-DD)")
        return None


def parse_filters(request: Request, who: Viewer) -> Filters:
    values = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    problems: list[str] = []
    status = values["status"] if values["status"] in {s.value for s in BatchStatus} else None
    kind = values["operation_type"]
    operation_type = kind if kind in {t.value for t in OperationType} else None
    actor: int | None = None
    if not who.sees_everything:
        actor = who.actor.id  # an owner sees only their own batches, whatever they ask
    elif values["actor"]:
        if values["actor"].isdigit():
            actor = int(values["actor"])
        else:
            problems.append(f"actor: {values['actor']!r} is not a user id")
    batch_id = None
    if values["q"]:
        try:
            batch_id = uuid.UUID(values["q"])
        except ValueError:
            problems.append(f"search: {values['q']!r} is not a batch id (a UUID)")
    since = _day(values["from"], "from", problems) if values["from"] else None
    until = _day(values["to"], "to", problems) if values["to"] else None
    query = BatchQuery(
        actor_id=actor,
        status=status,
        operation_type=operation_type,
        created_from=since,
        created_before=until + timedelta(days=1) if until else None,
        batch_id=batch_id,
    )
    return Filters(values, query, problems)


def _offset(request: Request) -> int:
    text = request.query_params.get("offset", "0")
    return min(int(text), 1_000_000) if text.isdigit() else 0


async def batches(request: Request) -> HTMLResponse:
    """The list; an htmx refresh (HX-Request) gets only its rows."""
    who = await viewer(request)
    filters = parse_filters(request, who)
    offset = _offset(request)
    async with request.app.state.context.engine.connect() as conn:
        count, rows = await batch_page(conn, filters.query, limit=PAGE_SIZE, offset=offset)
    values: dict[str, Any] = {
        "who": who,
        "filters": filters,
        "rows": [queries.with_figures(row) for row in rows],
        "count": count,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "statuses": [s.value for s in BatchStatus],
        "types": [t.value for t in OperationType],
        "refreshed": datetime.now(UTC),
    }
    if request.headers.get("hx-request"):
        return page("batch_rows.html", **values)
    return page("batches.html", **values)


@dataclass(frozen=True, slots=True)
class OperationView:
    """One operation of the batch: what was asked (when the request is stored) and what came
    of it (once it ran)."""

    index: int
    input: dict[str, Any] | None
    result: OperationResult | None
    took: float | None  # seconds since the previous operation finished (or the batch started)
    # Its event while the relay has not published it yet; none here means published.
    events: list[EventRecord]

    @property
    def routing_key(self) -> str:
        assert self.result is not None  # noqa: S101 - asked only of operations that ran
        return operation_routing_key(self.result.operation_type, self.result.outcome.value)


def operation_views(
    row: dict[str, Any],
    request: dict[str, Any] | None,
    results: list[OperationResult],
    events: dict[Any, list[EventRecord]],
) -> list[OperationView]:
    asked = list((request or {}).get("operations") or [])
    by_index = {result.index: result for result in results}
    views, previous = [], row["started_at"]
    for index in range(max(row["total_operations"], len(asked), len(by_index))):
        result = by_index.get(index)
        took = None
        if result is not None:
            took = (result.occurred_at - previous).total_seconds() if previous else None
            previous = result.occurred_at
        own = events.get(operation_event_id(row["batch_id"], index), []) if result else []
        views.append(
            OperationView(
                index,
                asked[index] if index < len(asked) else None,
                result,
                took if took is None or took >= 0 else None,
                own,
            )
        )
    return views


async def batch(request: Request, batch_id: uuid.UUID) -> HTMLResponse:
    who = await viewer(request)
    async with request.app.state.context.engine.connect() as conn:
        row = await queries.batch_summary(conn, batch_id)
        if row is None or not (who.sees_everything or row["actor_id"] == who.actor.id):
            # Not 403: a stranger must not learn that the batch exists.
            return page(
                "message.html",
                404,
                who=who,
                title="No such batch",
                message=f"There is no batch {batch_id} that you may see.",
            )
        results = await queries.batch_results(conn, batch_id)
        events = await batch_events(conn, batch_id, row["total_operations"])
        request_body = await batch_request(conn, batch_id)
    figures = queries.with_figures(row)
    return page(
        "batch.html",
        who=who,
        batch=figures,
        operations=operation_views(row, request_body, results, events),
        completion=events.get(completion_event_id(batch_id), []),
        actions=available_actions(row, has_request=request_body is not None),
        live=not BatchStatus(row["status"]).is_terminal,
        notice=request.query_params.get("notice", ""),
    )


async def download(request: Request, batch_id: uuid.UUID, kind: str) -> Response:
    who = await viewer(request)
    async with request.app.state.context.engine.connect() as conn:
        row = await queries.batch_summary(conn, batch_id)
        if row is None or not (who.sees_everything or row["actor_id"] == who.actor.id):
            return page(
                "message.html",
                404,
                who=who,
                title="No such batch",
                message=f"There is no batch {batch_id} that you may see.",
            )
        results = await queries.batch_results(conn, batch_id)
    name = f"batch-{batch_id}-results.{kind}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if kind == "csv":
        return Response(results_csv(results), media_type="text/csv; charset=utf-8", headers=headers)
    body = json.dumps([r.model_dump(mode="json") for r in results], indent=2)
    return Response(body, media_type="application/json", headers=headers)


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    routes.add_api_route("/console/batches", batches, methods=["GET"])
    routes.add_api_route("/console/batches/{batch_id}", batch, methods=["GET"])

    async def as_csv(request: Request, batch_id: uuid.UUID) -> Response:
        return await download(request, batch_id, "csv")

    async def as_json(request: Request, batch_id: uuid.UUID) -> Response:
        return await download(request, batch_id, "json")

    routes.add_api_route("/console/batches/{batch_id}/results.csv", as_csv, methods=["GET"])
    routes.add_api_route("/console/batches/{batch_id}/results.json", as_json, methods=["GET"])
    return routes
