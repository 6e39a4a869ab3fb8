"""FastAPI application: thin routes over the read queries and the publisher."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from consumer import metrics
from consumer.adapters import queries
from consumer.adapters.maintenance import user_stats
from consumer.adapters.queries import backlog
from consumer.domain.model import Actor
from consumer.entrypoints.http import jobs, labels, problems
from consumer.entrypoints.http.access import AccessLog
from consumer.entrypoints.http.auth import CurrentActor
from consumer.entrypoints.http.labels import results_csv
from consumer.entrypoints.http.middleware import BodyLimit, ErrorGuard, QueryHygiene
from consumer.entrypoints.http.rate_limits import Budget, RateLimits, within
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
from consumer.entrypoints.http.submission import callback_of, rejected_problem, submit, to_request
from consumer.entrypoints.queue_watch import QueueWatch
from consumer.log_config import LogThrottle
from consumer.service_layer.faults import describe
from consumer.service_layer.job_control import JobControl
from contracts import (
    MAX_BODY_BYTES,
    MAX_OPERATIONS,
    BatchCompleted,
    BatchRejected,
    BatchStatus,
    Outcome,
    Topology,
)
from contracts.schema import render
from publisher import DEFAULT_AMQP_URL, BatchPublisher

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)  # a scrape every few seconds during an outage: one line per 10 s
DESCRIPTION = (
    "Status, history and submission of batchops batches. The whole contract, the broker side "
    "included, is docs/contract.md in the batchops repository."
)
API = "/api/v1/batch"
MAX_WAIT_SECONDS = 30
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, unknown or revoked token"},
    429: {
        "model": Problem,
        "description": "over the token's rate limit; nothing was done",
        "headers": {
            "Retry-After": {
                "description": "whole seconds until the next request fits the limit",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
}


@dataclass
class ApiContext:
    engine: AsyncEngine
    publisher: BatchPublisher
    max_body_bytes: int
    # Extra readiness checks by name (e.g. "consumer": is it consuming?).
    readiness: dict[str, Callable[[], bool]]
    max_operations: int = MAX_OPERATIONS
    # Cancel and retry (a process serving the API always has it; tests may go without).
    job_control: JobControl | None = None
    # The console's view of the broker: dead letters (amqp_url, topology) and queue figures.
    amqp_url: str = DEFAULT_AMQP_URL
    topology: Topology = field(default_factory=Topology)
    queues: QueueWatch | None = None
    # Requests per token's user (off unless given: `bootstrap` passes the settings').
    rate_limits: RateLimits = field(default_factory=RateLimits)
    allow_private_callbacks: bool = False  # BATCHOPS_WEBHOOK_ALLOW_PRIVATE


def create_app(context: ApiContext, *, probes_only: bool = False) -> FastAPI:
    """The API; with `probes_only`, just /healthz, /readyz and /metrics (for consumers)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with context.publisher:
            yield

    app = FastAPI(
        title="batchops",
        version="1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,  # /docs and /redoc: console.install_web, from files in the package
        redoc_url=None,
    )
    app.state.context = context
    problems.install(app)
    # Starlette runs the last added outermost: the guard sees what the others let through,
    # and the access log sees every answer, the guard's too.
    app.add_middleware(ErrorGuard)
    app.add_middleware(BodyLimit, max_bytes=context.max_body_bytes)
    app.add_middleware(QueryHygiene)
    app.add_middleware(AccessLog)
    app.include_router(Routes(context).router(probes_only=probes_only))
    if not probes_only:
        from consumer.entrypoints.console import install_web  # noqa: PLC0415 - it imports us

        install_web(app, context)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as served, built without connecting to anything."""
    context = ApiContext(
        engine=create_async_engine("postgresql+asyncpg://localhost/unused"),
        publisher=BatchPublisher(),
        max_body_bytes=MAX_BODY_BYTES,
        readiness={},
    )
    return create_app(context).openapi()


def write_openapi(path: Path) -> Path:
    """Write the OpenAPI document in its committed form; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(openapi_document()), encoding="utf-8")
    return path


AcceptLanguage = Annotated[str | None, Header()]


@dataclass
class Routes:
    """The API's route functions, bound to one context."""

    context: ApiContext

    def router(self, *, probes_only: bool = False) -> APIRouter:
        router = APIRouter()
        _route(router, "/healthz", self.healthz, response_model=Health)
        _route(
            router,
            "/readyz",
            self.readyz,
            response_model=Health,
            responses={503: {"model": Problem, "description": "a dependency is unreachable"}},
        )
        _route(router, "/metrics", self.metrics, response_class=Response)
        if not probes_only:
            self._batch_routes(router)
        return router

    def _batch_routes(self, router: APIRouter) -> None:
        # history/ and stats/ before {batch_id}/, which would take their names as ids.
        _route(router, f"{API}/history/", self.history, response_model=HistoryPage)
        _route(router, f"{API}/stats/", self.stats, response_model=Stats)
        _route(
            router,
            f"{API}/{{batch_id}}/",
            self.detail,
            response_model=BatchDetail,
            responses={404: {"model": Problem, "description": "no such batch for you"}},
        )
        _route(
            router,
            f"{API}/{{batch_id}}/results",
            self.results,
            responses={
                200: {"content": {"text/csv": {}}, "description": "JSON list, or CSV"},
                404: {"model": Problem, "description": "no such batch for you"},
            },
        )
        for path, endpoint in (("cancel", self.cancel), ("retry", self.retry)):
            _route(
                router,
                f"{API}/{{batch_id}}/{path}",
                endpoint,
                methods=["POST"],
                status_code=202,
                response_model=BatchDetail if path == "cancel" else Accepted,
                responses={
                    404: {"model": Problem, "description": "no such batch for you"},
                    409: {"model": Problem, "description": "the batch's state does not allow it"},
                },
            )
        _route(
            router,
            f"{API}/",
            self.submit,
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            responses={
                200: {"model": BatchCompleted, "description": "finished within ?wait"},
                400: {"model": Problem, "description": "not JSON"},
                409: {"model": Problem, "description": "the batch_id is taken by another body"},
                413: {"model": Problem, "description": "body too large"},
                422: {"model": Problem, "description": "not a valid batch, or rejected"},
                503: {"model": Problem, "description": "the broker did not confirm the batch"},
            },
        )

    async def healthz(self) -> Health:
        return Health(status="ok")

    async def readyz(self, request: Request) -> JSONResponse:
        checks = {"database": await self._database_ok(), "broker": self.context.publisher.is_open}
        checks |= {name: probe() for name, probe in self.context.readiness.items()}
        if all(checks.values()):
            return JSONResponse(Health(status="ok", checks=checks).model_dump())
        down = ", ".join(name for name, ok in checks.items() if not ok)
        return problems.problem_response(request, 503, f"not ready: {down}", checks=checks)

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
            _throttled.warning("outbox_backlog_unavailable", error=describe(exc))
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
        return {**labels.summarize(row, labels.language(accept_language)), "results": results}

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
            results_csv(results),
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
            results=[BatchSummary.model_validate(labels.summarize(row, lang)) for row in rows],
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

    async def cancel(
        self, batch_id: uuid.UUID, actor: CurrentActor, accept_language: AcceptLanguage = None
    ) -> Any:
        lang = labels.language(accept_language)
        return await jobs.cancel(self.context.engine, self._jobs(), batch_id, actor, lang)

    async def retry(self, batch_id: uuid.UUID, actor: CurrentActor, response: Response) -> Any:
        context = self.context
        accepted = await jobs.retry(
            context.engine, context.publisher, self._jobs(), batch_id, actor
        )
        response.headers["Location"] = accepted.location
        return accepted

    def _jobs(self) -> JobControl:
        if self.context.job_control is None:
            raise problems.ProblemError(503, "job control is not available in this process")
        return self.context.job_control

    async def submit(
        self,
        submission: BatchSubmission,
        actor: CurrentActor,
        response: Response,
        wait: Annotated[int | None, Query(ge=0, le=MAX_WAIT_SECONDS)] = None,
        dry_run: Annotated[
            bool, Query(description="rehearse: run everything, keep nothing")
        ] = False,
    ) -> Any:
        if dry_run:
            submission = submission.model_copy(update={"dry_run": True})
        request = to_request(submission, actor, self.context.max_operations)
        callback = await callback_of(submission, self.context.allow_private_callbacks)
        outcome = await submit(self.context.engine, self.context.publisher, request, wait, callback)
        location = f"{API}/{request.batch_id}/"
        if isinstance(outcome, Accepted):
            response.headers["Location"] = location
            return outcome
        if isinstance(outcome, BatchRejected):
            raise rejected_problem(outcome)
        return JSONResponse(
            outcome.model_dump(mode="json"), status_code=200, headers={"Location": location}
        )


def _route(
    router: APIRouter,
    path: str,
    endpoint: Callable[..., Any],
    *,
    methods: list[str] | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
    **options: Any,
) -> None:
    """Serve `path` with and without its trailing slash (no redirect); the OpenAPI document
    lists the form the contract shows."""
    other = path.removesuffix("/") if path.endswith("/") else f"{path}/"
    described = {**ERRORS, **(responses or {})} if path.startswith(API) else responses
    if path.startswith(API):
        budget = Budget.SUBMIT if methods == ["POST"] else Budget.READ
        options["dependencies"] = [Depends(within(budget))]
    for form, listed in ((path, True), (other, False)):
        router.add_api_route(
            form,
            endpoint,
            methods=methods or ["GET"],
            responses=described,
            include_in_schema=listed,
            **options,
        )
