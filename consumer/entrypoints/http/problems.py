"""Every HTTP error as RFC 9457 `application/problem+json`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from consumer.entrypoints.http.schemas import Problem
from contracts import RejectionReason

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ProblemError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers


def problem_response(
    request: Request,
    status: int,
    detail: str | None,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    checks: Mapping[str, bool] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    if checks is not None:
        body["checks"] = dict(checks)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_list(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as the `errors` of a problem: where, what and which kind."""
    return [reason.model_dump() for reason in RejectionReason.from_errors(errors)]


def document(app: FastAPI) -> None:
    """Describe every error response in the OpenAPI document as problem+json, as sent."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for response in responses.values():
                described = json.dumps(response)
                if "Problem" in described or "HTTPValidationError" in described:
                    response["content"] = problem
            if "parameters" in operation or "requestBody" in operation:
                responses.setdefault("422", {"description": "invalid request", "content": problem})
    for replaced in ("HTTPValidationError", "ValidationError"):
        schemas.pop(replaced, None)
    return schema


def install(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)  # noqa: S101 - registered for this type only
        return problem_response(
            request, exc.status, exc.detail, errors=exc.errors, headers=exc.headers
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
        return problem_response(request, exc.status_code, str(exc.detail), headers=exc.headers)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type
        errors = error_list(exc.errors())
        if any(err["type"] == "json_invalid" for err in errors):
            return problem_response(request, 400, "the body is not valid JSON", errors=errors)
        return problem_response(request, 422, "the request is not valid", errors=errors)

    document(app)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
