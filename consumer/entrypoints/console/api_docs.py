"""The API's documentation from assets inside the package, readable without the internet:
Swagger UI (`/docs`), ReDoc (`/redoc`) and the AsyncAPI document as a page (`/docs/asyncapi`)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from consumer.entrypoints.console.render import page

VENDOR = "/console/static/vendor"


@cache
def asyncapi_document() -> dict[str, Any]:
    """The committed AsyncAPI document that ships in the contracts package."""
    text = files("contracts").joinpath("schemas", "asyncapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _ref_name(value: Any) -> str:
    """`#/components/messages/BatchRequest` -> `BatchRequest`."""
    if isinstance(value, dict) and "$ref" in value:
        return str(value["$ref"]).rsplit("/", 1)[-1]
    return ""


def asyncapi_view(document: dict[str, Any]) -> dict[str, Any]:
    """What the page lists: channels with their messages, operations, and message schemas."""
    components = document.get("components", {})
    channels = [
        {
            "name": name,
            # A null address: the channel is named by each message (a reply_to queue).
            "address": channel.get("address") or "(each message's reply_to)",
            "description": channel.get("description", ""),
            "messages": [_ref_name(m) or key for key, m in channel.get("messages", {}).items()],
            "bindings": channel.get("bindings", {}),
        }
        for name, channel in document.get("channels", {}).items()
    ]
    operations = [
        {
            "name": name,
            "action": operation.get("action", ""),
            "channel": _ref_name(operation.get("channel")),
            "summary": operation.get("summary", "") or operation.get("description", ""),
        }
        for name, operation in document.get("operations", {}).items()
    ]
    return {
        "info": document.get("info", {}),
        "servers": document.get("servers", {}),
        "channels": channels,
        "operations": operations,
        "messages": components.get("messages", {}),
        "schemas": components.get("schemas", {}),
    }


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="batchops API",
            swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui.css",
            swagger_favicon_url="/console/static/favicon.svg",
            # Its default would have every visitor's browser ask swagger.io to validate.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="batchops API",
            redoc_js_url=f"{VENDOR}/redoc.standalone.js",
            redoc_favicon_url="/console/static/favicon.svg",
            with_google_fonts=False,
        )

    async def asyncapi() -> HTMLResponse:
        return page("asyncapi.html", who=None, doc=asyncapi_view(asyncapi_document()))

    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(asyncapi_document())

    for path, endpoint in (
        ("/docs", swagger),
        ("/redoc", redoc),
        ("/docs/asyncapi", asyncapi),
        ("/docs/asyncapi.json", asyncapi_json),
    ):
        routes.add_api_route(path, endpoint, methods=["GET"])
    return routes
