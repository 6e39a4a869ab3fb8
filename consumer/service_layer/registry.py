"""Custom handlers registered by name, from code or the `batchops.handlers` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

import structlog

from consumer.service_layer.handlers import OperationHandler

ENTRY_POINT_GROUP = "batchops.handlers"
log = structlog.get_logger(__name__)


def load_custom_handlers(
    extra: dict[str, OperationHandler] | None = None,
) -> dict[str, OperationHandler]:
    """Every installed entry point of the group, then `extra` (which wins on a clash)."""
    handlers: dict[str, OperationHandler] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            handlers[entry.name] = entry.load()
        except Exception:
            log.exception("custom_handler_failed_to_load", name=entry.name, value=entry.value)
    handlers.update(extra or {})
    return handlers
