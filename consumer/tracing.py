"""Optional OpenTelemetry tracing (the `tracing` extra): a span per batch and per operation,
with the W3C `traceparent` carried from the request's headers to every event it produces.

Without OpenTelemetry installed every function here is a cheap no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from opentelemetry import propagate, trace
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]

TRACEPARENT = "traceparent"


@contextlib.contextmanager
def batch_span(traceparent: str | None, **attributes: str | int) -> Iterator[None]:
    """The consumer side of a batch, a child of the producer's span when it sent one."""
    if trace is None:
        yield
        return
    parent = propagate.extract({TRACEPARENT: traceparent} if traceparent else {})
    tracer = trace.get_tracer("batchops")
    with tracer.start_as_current_span(
        "batchops.batch", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield


@contextlib.contextmanager
def operation_span(**attributes: str | int) -> Iterator[None]:
    if trace is None:
        yield
        return
    with trace.get_tracer("batchops").start_as_current_span(
        "batchops.operation", attributes=attributes
    ):
        yield


def annotate(**attributes: str | int) -> None:
    """Add attributes to the active span (known only once the request is validated)."""
    if trace is not None:
        trace.get_current_span().set_attributes(attributes)


def current_traceparent() -> str | None:
    """The `traceparent` of the active span, to put on an outgoing message."""
    if propagate is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)
