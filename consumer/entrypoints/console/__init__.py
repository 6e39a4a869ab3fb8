"""The web console (`/console`) and the offline API documentation, served by the HTTP API:
server-rendered Jinja2 pages, htmx and the documentation assets shipped in `static/`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from consumer.entrypoints.console import (
    api_docs,
    batch_pages,
    job_actions,
    operator_pages,
    sign_in,
)
from consumer.entrypoints.console.render import STATIC, page
from consumer.entrypoints.console.session import Forbidden, SignInRequired, sign_in_location

__all__ = ["install_web"]


def install_web(app: FastAPI, context: Any) -> None:  # noqa: ARG001 - routes read app.state
    """Add the console's and the docs' routes, their static files and error pages to `app`."""
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    for routes in (
        api_docs.router(),
        sign_in.router(),
        batch_pages.router(),
        job_actions.router(),
        operator_pages.router(),
    ):
        app.include_router(routes)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(Forbidden, _forbidden)


async def _sign_in_required(request: Request, _: Exception) -> Response:
    location = sign_in_location(request)
    if request.headers.get("hx-request"):
        # htmx would swap the sign-in page into a table: have it load the page instead.
        return Response(status_code=401, headers={"HX-Redirect": location})
    if request.method != "GET" or request.headers.get("authorization"):
        return page(
            "message.html",
            401,
            who=None,
            title="Sign in required",
            message="The token is missing, unknown or revoked.",
        )
    return RedirectResponse(location, status_code=303)


async def _forbidden(_: Request, exc: Exception) -> HTMLResponse:
    return page("message.html", 403, who=None, title="Not for you", message=str(exc))
