"""One access-log line and the HTTP metrics for every request the API answers."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer import metrics

log = structlog.get_logger(__name__)
# Set by the authentication of a request (API or console) in the request's state.
USER_KEY = "batchops_user_id"
UNMATCHED = "unmatched"  # a path no route serves: one label, whatever was asked


def remember_user(scope_state: Any, user_id: int) -> None:
    """Note who made the request, for its access-log line."""
    setattr(scope_state, USER_KEY, user_id)


class AccessLog:
    """`http_request` with method, path, route, status, duration and user; the route template
    (never the raw path, whose ids would multiply the series) labels the metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        # The routes write into this dict (request.state); inner layers copy the scope, not it.
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, tracking)
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, elapsed: float) -> None:
        route = route_template(scope)
        method = scope["method"]
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_DURATION.labels(method, route).observe(elapsed)
        log.info(
            "http_request",
            method=method,
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            user_id=state.get(USER_KEY),
            client=scope["client"][0] if scope.get("client") else None,
        )


def route_template(scope: Scope) -> str:
    """The path template of the route that serves `scope` (`/api/v1/batch/{batch_id}`)."""
    router = getattr(scope.get("app"), "router", None)
    found = _matching_path(getattr(router, "routes", []), scope)
    # Both forms of a path (with and without its trailing slash) are one route.
    return (found.rstrip("/") or "/") if found is not None else UNMATCHED


def _matching_path(routes: list[Any], scope: Scope) -> str | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.FULL:
            continue
        # Newer FastAPI releases wrap an included router instead of copying its routes.
        inner = getattr(route, "original_router", None)
        if inner is not None:
            return _matching_path(inner.routes, scope)
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else None
    return None
