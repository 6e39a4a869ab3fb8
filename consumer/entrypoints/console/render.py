"""The console's Jinja2 templates (inside the package) and how pages are answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from consumer.entrypoints.batch_views import describe_webhook

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.filters["seconds"] = seconds
    env.filters["webhook"] = lambda webhook: describe_webhook(webhook, when)
    return env


def when(value: datetime | None) -> str:
    """A timestamp in UTC to the second, as operators read logs."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def page(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    html = environment().get_template(name).render(**values)
    # Pages hold a user's data: never cached, never framed by another site.
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )
