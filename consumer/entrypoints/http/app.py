"""FastAPI application: thin routes over the read queries and the publisher."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer import metrics
from consumer.adapters import queries
from consumer.adapters.maintenance import user_stats
from consumer.adapters.relay import backlog
from consumer.adapters.tokens import authenticate
from consumer.domain.model import Actor
from consumer.entrypoints.http import labels, problems
from consumer.entrypoints.http.schemas import (
    Accepted,
    BatchDetail,
    BatchSubmission,
    BatchSummary,
    Health,
    HistoryPage,
    Problem,
    Stats,
)
from contracts import BatchCompleted, BatchRejected, BatchRequest, BatchStatus, Outcome
from publisher import BatchPublisher, CompletionTimeout, PublishError

log = structlog.get_logger(__name__)
API = "/api/v1/batch"
MAX_WAIT_SECONDS = 30
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, unknown or revoked token"},
}


@dataclass
class ApiContext:
    engine: AsyncEngine
    publisher: BatchPublisher
    max_body_bytes: int
    # Extra readiness checks by name (e.g. "consumer": is it consuming?).
    readiness: dict[str, Callable[[], bool]]


def create_app(context: ApiContext, *, probes_only: bool = False) -> FastAPI:
    """The API; with `probes_only`, just /healthz, /readyz and /metrics (for consumers)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with context.publisher:
            yield

    app = FastAPI(
        title="batchops",
        version="1.0",
        description="Status, history and submission of batchops batches (DESIGN §7).",
        lifespan=lifespan,
    )
    app.state.context = context
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=context.max_body_bytes)
    app.include_router(Routes(context).router(probes_only=probes_only))
    return app


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                raise problems.ProblemError(413, f"the body is larger than {self._max} bytes")
            return message

        await self._app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = problems.problem_response(
            request, 413, f"the body is larger than {self._max} bytes"
        )
        await response(scope, receive, send)


bearer = HTTPBearer(auto_error=False, description="a token from `batchops token create`")


async def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    unauthorized = problems.ProblemError(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    context: ApiContext = request.app.state.context
    async with context.engine.connect() as conn:
        actor = await authenticate(conn, credentials.credentials)
    if actor is None:
        raise unauthorized
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
AcceptLanguage = Annotated[str | None, Header()]


def summarize(row: dict[str, Any], lang: str) -> dict[str, Any]:
    state = queries.batch_state(row)
    return {
        **row,
        "status_display": labels.status_label(row["status"], lang),
        "operation_type_display": labels.operation_type_label(row["operation_type"], lang),
        "success_rate": state.success_rate,
        "progress": state.progress,
        "duration_seconds": state.duration_seconds,
    }


@dataclass
class Routes:
    """The API's route functions, bound to one context."""

    context: ApiContext

    def router(self, *, probes_only: bool = False) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/healthz", self.healthz, methods=["GET"], response_model=Health)
        router.add_api_route(
            "/readyz",
            self.readyz,
            methods=["GET"],
            response_model=Health,
            responses={503: {"model": Health, "description": "a dependency is unreachable"}},
        )
        router.add_api_route("/metrics", self.metrics, methods=["GET"], response_class=Response)
        if probes_only:
            return router
        router.add_api_route(
            f"{API}/history/",
            self.history,
            methods=["GET"],
            response_model=HistoryPage,
            responses=ERRORS,
        )
        router.add_api_route(
            f"{API}/stats/", self.stats, methods=["GET"], response_model=Stats, responses=ERRORS
        )
        router.add_api_route(
            f"{API}/{{batch_id}}/",
            self.detail,
            methods=["GET"],
            response_model=BatchDetail,
            responses={**ERRORS, 404: {"model": Problem, "description": "no such batch for you"}},
        )
        router.add_api_route(
            f"{API}/{{batch_id}}/results",
            self.results,
            methods=["GET"],
            responses={
                **ERRORS,
                200: {"content": {"text/csv": {}}, "description": "JSON list, or CSV"},
                404: {"model": Problem, "description": "no such batch for you"},
            },
        )
        router.add_api_route(
            f"{API}/",
            self.submit,
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses={
                **ERRORS,
                200: {"model": BatchCompleted, "description": "finished within ?wait"},
                400: {"model": Problem, "description": "not JSON"},
                413: {"model": Problem, "description": "body too large"},
                422: {"model": Problem, "description": "not a valid batch"},
                503: {"model": Problem, "description": "the broker did not take the batch"},
            },
        )
        return router

    async def healthz(self) -> Health:
        return Health(status="ok")

    async def readyz(self) -> JSONResponse:
        checks = {"database": await self._database_ok(), "broker": self.context.publisher.is_open}
        checks |= {name: probe() for name, probe in self.context.readiness.items()}
        ready = all(checks.values())
        body = Health(status="ok" if ready else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    async def _database_ok(self) -> bool:
        try:
            async with self.context.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False
        return True

    async def metrics(self) -> Response:
        try:
            async with self.context.engine.connect() as conn:
                unsent, oldest = await backlog(conn)
            metrics.OUTBOX_BACKLOG.set(unsent)
            metrics.OUTBOX_OLDEST_AGE.set(oldest)
        except Exception as exc:  # noqa: BLE001 - metrics must render even without a database
            log.warning("outbox_backlog_unavailable", error=repr(exc))
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def detail(
        self,
        batch_id: uuid.UUID,
        actor: CurrentActor,
        accept_language: AcceptLanguage = None,
        status: Annotated[
            Outcome | None, Query(description="only results with this outcome")
        ] = None,
    ) -> dict[str, Any]:
        async with self.context.engine.connect() as conn:
            row = await self._visible(conn, batch_id, actor)
            results = await queries.batch_results(conn, batch_id, status.value if status else None)
        return {**summarize(row, labels.language(accept_language)), "results": results}

    async def results(
        self,
        batch_id: uuid.UUID,
        actor: CurrentActor,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
        status: Annotated[Outcome | None, Query()] = None,
    ) -> Response:
        async with self.context.engine.connect() as conn:
            await self._visible(conn, batch_id, actor)
            results = await queries.batch_results(conn, batch_id, status.value if status else None)
        if format == "json":
            return JSONResponse([r.model_dump(mode="json") for r in results])
        return Response(
            _csv(results),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}-results.csv"'},
        )

    async def _visible(self, conn: Any, batch_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
        row = await queries.batch_summary(conn, batch_id)
        # 404, not 403: a stranger must not learn that the batch exists.
        if row is None or not (actor.is_back_office or row["actor_id"] == actor.id):
            raise problems.ProblemError(404, f"batch {batch_id} not found")
        return row

    async def history(
        self,
        actor: CurrentActor,
        accept_language: AcceptLanguage = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        status: Annotated[BatchStatus | None, Query()] = None,
        operation_type: Annotated[str | None, Query(max_length=40)] = None,
    ) -> HistoryPage:
        where = queries.HistoryFilter(
            actor_id=None if actor.is_back_office else actor.id,
            status=status.value if status else None,
            operation_type=operation_type,
        )
        async with self.context.engine.connect() as conn:
            count, rows = await queries.history(conn, where, limit=limit, offset=offset)
        lang = labels.language(accept_language)
        return HistoryPage(
            count=count,
            limit=limit,
            offset=offset,
            results=[BatchSummary.model_validate(summarize(row, lang)) for row in rows],
        )

    async def stats(self, actor: CurrentActor) -> Stats:
        async with self.context.engine.connect() as conn:
            totals = await user_stats(conn, actor.id)
        return Stats(
            total_batches=totals.total_batches,
            total_operations=totals.total_operations,
            succeeded_operations=totals.succeeded_operations,
            success_rate=totals.success_rate,
            by_status=totals.by_status,
            by_operation_type=totals.by_operation_type,
        )

    async def submit(
        self,
        submission: BatchSubmission,
        actor: CurrentActor,
        response: Response,
        wait: Annotated[int | None, Query(ge=0, le=MAX_WAIT_SECONDS)] = None,
    ) -> Any:
        try:
            request = BatchRequest.model_validate(
                {
                    **submission.model_dump(exclude_none=True),
                    "batch_id": submission.batch_id or uuid.uuid4(),
                    "actor_id": actor.id,
                }
            )
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise problems.ProblemError(422, "the batch is not valid", errors=errors) from None
        location = f"{API}/{request.batch_id}/"
        response.headers["Location"] = location
        accepted = Accepted(batch_id=request.batch_id, location=location)
        try:
            if not wait:
                await self.context.publisher.publish(request)
                return accepted
            try:
                completion = await self.context.publisher.publish_and_wait(request, timeout=wait)
            except CompletionTimeout:
                return accepted
        except PublishError as exc:
            raise problems.ProblemError(503, f"the batch was not accepted: {exc}") from None
        if isinstance(completion, BatchRejected):
            errors = [e.model_dump() for e in completion.errors]
            raise problems.ProblemError(422, "the batch was rejected", errors=errors)
        return JSONResponse(
            completion.model_dump(mode="json"), status_code=200, headers={"Location": location}
        )


def _csv(results: list[Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", "resource_id", "outcome", "status", "error_code", "error_message"])
    for r in results:
        writer.writerow(
            [
                r.index,
                r.resource_id,
                r.outcome.value,
                r.status,
                r.error.code.value if r.error else "",
                r.error.message if r.error else "",
            ]
        )
    return out.getvalue()
