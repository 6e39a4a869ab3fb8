"""Who is looking at the console: an API token from an HttpOnly session cookie (set by the
sign-in form) or from an `Authorization: Bearer` header (scripts), and the CSRF token that every
form posted with the cookie must carry."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from fastapi import Request

from consumer.adapters.tokens import authenticate
from consumer.domain.model import Actor, Role
from consumer.entrypoints.http.access import remember_user

COOKIE = "batchops_console"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 8 * 3600
_CSRF_PURPOSE = b"batchops console form"


@dataclass(frozen=True, slots=True)
class Viewer:
    actor: Actor
    token: str
    by_cookie: bool  # False: a bearer header, which a foreign page cannot make a browser send

    @property
    def csrf(self) -> str:
        """Derived from the session's own secret token: only its holder can compute it."""
        return hmac.new(self.token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()

    @property
    def sees_everything(self) -> bool:
        return self.actor.is_back_office

    @property
    def is_admin(self) -> bool:
        return self.actor.is_active and self.actor.role is Role.ADMIN


class SignInRequired(Exception):
    """No valid token: the console answers with its sign-in page."""


class Forbidden(Exception):
    """Signed in, but this page or action is not for this user."""


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The token the request carries, and whether it came from the session cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    return request.cookies.get(COOKIE), True


async def viewer(request: Request) -> Viewer:
    """The signed-in user; raises SignInRequired."""
    token, by_cookie = presented_token(request)
    if not token:
        raise SignInRequired
    async with request.app.state.context.engine.connect() as conn:
        actor = await authenticate(conn, token)
    if actor is None:
        raise SignInRequired
    remember_user(request.state, actor.id)
    return Viewer(actor, token, by_cookie)


async def form(request: Request, who: Viewer | None = None) -> dict[str, str]:
    """A posted urlencoded form, its CSRF token checked when the session is a cookie."""
    fields = {
        key: values[-1]
        for key, values in parse_qs((await request.body()).decode("utf-8", "replace")).items()
    }
    if who is not None and who.by_cookie:
        sent = fields.get(CSRF_FIELD, "")
        if not hmac.compare_digest(sent, who.csrf):
            raise Forbidden("the form is stale or forged (CSRF check failed): reload the page")
    return fields


def sign_in_location(request: Request) -> str:
    """The sign-in page, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/console/login?next={quote(here, safe='')}"


def safe_next(target: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"
