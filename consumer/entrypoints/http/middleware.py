"""ASGI layers around the API: body size, query hygiene, and a problem+json answer for every
error that escapes a route (docs/contract.md, "HTTP API")."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

import asyncpg
import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer.adapters.db_faults import classify as db_fault
from consumer.entrypoints.http import problems
from consumer.log_config import LogThrottle
from consumer.service_layer.faults import describe

log = structlog.get_logger(__name__)
_throttled = LogThrottle(log)


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
            await _answer(scope, receive, send, 413, f"the body is larger than {self._max} bytes")
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


class QueryHygiene:
    """An empty query parameter (`status=`) means the same as an absent one; a NUL character
    in the path or the query (PostgreSQL text cannot hold it) is a 422."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        kept = [pair for pair in _pairs(scope["query_string"]) if not pair.endswith(b"=")]
        if "\x00" in scope["path"] or any(b"\x00" in _decoded(pair) for pair in kept):
            await _answer(scope, receive, send, 422, "the URL holds a NUL character")
            return
        await self._app({**scope, "query_string": b"&".join(kept)}, receive, send)


def _pairs(query: bytes) -> Iterator[bytes]:
    for pair in query.split(b"&"):
        if pair:
            yield pair if b"=" in pair else pair + b"="


def _decoded(pair: bytes) -> bytes:
    return unquote_to_bytes(pair.replace(b"+", b" "))


class ErrorGuard:
    """Whatever a route raises unhandled becomes problem+json: 503 when the database does not
    answer, 422 when PostgreSQL refuses a character of the input, 500 (logged) otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, tracking)
        except Exception as exc:
            if started:
                raise  # too late for another answer; the server closes the connection
            status, detail = classify(exc)
            if status == 500:
                log.error("http_request_failed", path=scope["path"], exc_info=exc)
            else:
                _throttled.warning("http_request_refused", status=status, error=describe(exc))
            await _answer(scope, receive, send, status, detail)


def classify(exc: BaseException) -> tuple[int, str]:
    """The status and public detail of an unexpected error (nothing internal is shown)."""
    for link in _chain(exc):
        if db_fault(link).transient:
            return 503, "the database is unreachable; try again later"
        if isinstance(link, asyncpg.DataError):
            return 422, "the request holds a value the database cannot store"
    return 500, "an unexpected error occurred; it has been logged"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (SQLAlchemy keeps the driver's error in `orig`)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None)
        pending += [
            link.__cause__,
            link.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    response = problems.problem_response(Request(scope, receive), status, detail)
    await response(scope, receive, send)
