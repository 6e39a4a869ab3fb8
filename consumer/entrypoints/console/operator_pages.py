"""The console's operator pages: the overview (queues, work in flight, the last hour, the
outbox) and the dead letters (reason, headers, raw body; replay, purge) for admins."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumer.adapters.broker_stats import QueueStats
from consumer.adapters.console_queries import overview
from consumer.entrypoints import dead_letters
from consumer.entrypoints.console.charts import throughput_chart
from consumer.entrypoints.console.render import page
from consumer.entrypoints.console.session import Forbidden, Viewer, form, viewer
from consumer.entrypoints.exits import CommandFailed
from consumer.service_layer.faults import describe

log = structlog.get_logger(__name__)
DEAD_LETTERS_SHOWN = 50
BROKER_TIMEOUT = 5.0


async def _queues(request: Request) -> tuple[list[QueueStats], str | None]:
    """A fresh reading of the queues, or the last one with the reason it is not fresher."""
    watch = request.app.state.context.queues
    if watch is None:
        return [], "this process does not watch the broker"
    try:
        return await asyncio.wait_for(watch.read(), BROKER_TIMEOUT), None
    except Exception as exc:  # noqa: BLE001 - the page shows the last reading and why
        return watch.latest, f"the broker did not answer ({describe(exc)})"


async def overview_page(request: Request) -> HTMLResponse:
    """The whole page; an htmx refresh (HX-Request) gets only its figures."""
    who = await viewer(request)
    if not who.sees_everything:
        raise Forbidden("the overview is for admin and staff users")
    context = request.app.state.context
    async with context.engine.connect() as conn:
        figures = await overview(conn, namespace=context.topology.namespace)
    queues, broker_problem = await _queues(request)
    values: dict[str, Any] = {
        "who": who,
        "figures": figures,
        "chart": throughput_chart(figures.last_hour),
        "queues": queues,
        "broker_problem": broker_problem,
    }
    if request.headers.get("hx-request"):
        return page("overview_figures.html", **values)
    return page("overview.html", **values)


def _admin(who: Viewer) -> None:
    if not who.is_admin:
        raise Forbidden("dead letters are for admin users")


async def dead_letters_page(request: Request) -> HTMLResponse:
    who = await viewer(request)
    _admin(who)
    context = request.app.state.context
    try:
        total, letters = await dead_letters.peek(
            context.amqp_url, context.topology, DEAD_LETTERS_SHOWN
        )
    except (CommandFailed, OSError, Exception) as exc:  # noqa: BLE001 - shown on the page
        return page(
            "dead_letters.html",
            who=who,
            letters=[],
            total=0,
            reasons={},
            queue=context.topology.dead_letter_queue,
            problem=describe(exc),
            notice=request.query_params.get("notice", ""),
        )
    async with context.engine.connect() as conn:
        stored = await dead_letters.rejection_events(conn, letters)
    return page(
        "dead_letters.html",
        who=who,
        letters=letters,
        total=total,
        reasons={letter.position: dead_letters.why(letter, stored) for letter in letters},
        queue=context.topology.dead_letter_queue,
        problem=None,
        notice=request.query_params.get("notice", ""),
    )


def _back(notice: str) -> RedirectResponse:
    return RedirectResponse(f"/console/dead-letters?notice={quote(notice)}", status_code=303)


async def replay(request: Request) -> Response:
    """Replay one batch's dead letter (`batch_id`), or all of them (once confirmed)."""
    who = await viewer(request)
    _admin(who)
    fields = await form(request, who)
    context = request.app.state.context
    try:
        batch_id = uuid.UUID(fields["batch_id"]) if fields.get("batch_id") else None
    except ValueError:
        return _back(f"nothing replayed: {fields['batch_id']!r} is not a batch id")
    if batch_id is None and fields.get("confirm") != "yes":
        return _back("nothing replayed: tick the box to confirm")
    try:
        report = await dead_letters.replay(
            context.amqp_url, context.topology, limit=None, batch_id=batch_id
        )
    except CommandFailed as exc:
        return _back(f"replay stopped: {exc}")
    log.info("console_dead_letters_replayed", count=len(report.replayed), user_id=who.actor.id)
    return _back(f"replayed {len(report.replayed)} dead letters; {report.left} left")


async def purge(request: Request) -> Response:
    who = await viewer(request)
    _admin(who)
    fields = await form(request, who)
    if fields.get("confirm") != "yes":
        return _back("nothing purged: tick the box to confirm")
    context = request.app.state.context
    try:
        purged = await dead_letters.purge(context.amqp_url, context.topology)
    except CommandFailed as exc:
        return _back(f"purge failed: {exc}")
    log.info("console_dead_letters_purged", count=purged, user_id=who.actor.id)
    return _back(f"purged {purged} dead letters")


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    routes.add_api_route("/console/overview", overview_page, methods=["GET"])
    routes.add_api_route("/console/dead-letters", dead_letters_page, methods=["GET"])
    routes.add_api_route("/console/dead-letters/replay", replay, methods=["POST"])
    routes.add_api_route("/console/dead-letters/purge", purge, methods=["POST"])
    return routes
