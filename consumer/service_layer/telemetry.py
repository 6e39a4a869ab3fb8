"""What the service layer reports about its work (metrics, traces), as a port: this module
names the reports and does nothing with them; consumer/observability.py turns them into
Prometheus metrics and OpenTelemetry spans. The service layer imports neither library."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

from consumer.domain.batch import BatchState
from consumer.service_layer.faults import Fault
from contracts import ErrorCode, OperationResult


class OutboxListener(Protocol):
    def __call__(self, *, urgent: bool) -> None:
        """Events were committed to the outbox; `urgent` for a batch's last ones (its
        completion, which its producer waits for)."""


def ignore_outbox(*, urgent: bool) -> None:
    """An OutboxListener for a service layer running without a relay (tests)."""


class Telemetry:
    """Reports nothing: the default, and the base of the real one."""

    @contextlib.contextmanager
    def batch_span(self, traceparent: str | None) -> Iterator[None]:  # noqa: ARG002 - a no-op
        """Around one delivered batch; a child of the producer's trace when it sent one."""
        yield

    def annotate(self, **attributes: str | int) -> None:
        """Attributes of the current batch, known once its request is validated."""

    @contextlib.contextmanager
    def operation_span(self, operation_type: str, **attributes: str | int) -> Iterator[None]:  # noqa: ARG002 - a no-op
        """Around one operation, its retries included (timed)."""
        yield

    def traceparent(self) -> str | None:
        """The W3C trace context to carry on the events made now, if any."""
        return None

    def results_recorded(self, results: Sequence[OperationResult]) -> None:
        """Operation results that were committed."""

    def batch_finished(self, state: BatchState) -> None:
        """A batch reached its terminal status."""

    def batch_rejected(self, code: ErrorCode, reason: str) -> None:
        """A request was refused before execution; `reason` is the kind of its first fault
        (e.g. `body_too_large`, `json_invalid`, `unknown_handler`)."""

    def database_reachable(self, reachable: bool) -> None:
        """An outage began (False) or ended (True)."""

    def transaction_retried(self, fault: Fault) -> None:
        """A transaction is tried again after the database refused it or its connection broke."""
