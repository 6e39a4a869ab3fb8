"""Signing in to the console with an API token (`batchops token create USER_ID`), and out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumer.adapters.tokens import authenticate
from consumer.entrypoints.console.render import page
from consumer.entrypoints.console.session import (
    COOKIE,
    SESSION_SECONDS,
    form,
    safe_next,
    viewer,
)


async def login_form(request: Request) -> HTMLResponse:
    return page(
        "login.html", who=None, next=safe_next(request.query_params.get("next")), problem=None
    )


async def login(request: Request) -> Response:
    # No CSRF token yet (nobody is signed in); the cookie is SameSite=Strict besides.
    fields = await form(request)
    token = fields.get("token", "").strip()
    target = safe_next(fields.get("next"))
    async with request.app.state.context.engine.connect() as conn:
        actor = await authenticate(conn, token) if token else None
    if actor is None:
        return page(
            "login.html",
            401,
            who=None,
            next=target,
            problem="That token is unknown, revoked, or its user is inactive.",
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    who = await viewer(request)
    await form(request, who)  # checks the CSRF token: nobody else may sign you out
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


async def home(request: Request) -> Response:
    who = await viewer(request)
    target = "/console/overview" if who.sees_everything else "/console/batches"
    return RedirectResponse(target, status_code=303)


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    routes.add_api_route("/console", home, methods=["GET"])
    routes.add_api_route("/console/", home, methods=["GET"])
    routes.add_api_route("/console/login", login_form, methods=["GET"])
    routes.add_api_route("/console/login", login, methods=["POST"])
    routes.add_api_route("/console/logout", logout, methods=["POST"])
    return routes
