"""The rule every operation checks before its own: an inactive (or unknown) actor may do
nothing."""

from __future__ import annotations

from consumer.domain.errors import PermissionDenied
from consumer.domain.model import Actor


def require_active(actor: Actor) -> None:
    if not actor.is_active:
        raise PermissionDenied("the actor is inactive or unknown")
