"""The service layer's reports (service_layer/telemetry.py) as this process's Prometheus
metrics (consumer/metrics.py) and OpenTelemetry spans (consumer/tracing.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from consumer import metrics, tracing
from consumer.domain.batch import BatchState
from consumer.service_layer.faults import Fault
from consumer.service_layer.telemetry import Telemetry
from contracts import ErrorCode, OperationResult


class ProcessTelemetry(Telemetry):
    @contextlib.contextmanager
    def batch_span(self, traceparent: str | None) -> Iterator[None]:
        with tracing.batch_span(traceparent):
            yield

    def annotate(self, **attributes: str | int) -> None:
        tracing.annotate(**attributes)

    @contextlib.contextmanager
    def operation_span(self, operation_type: str, **attributes: str | int) -> Iterator[None]:
        with (
            metrics.OPERATION_DURATION.labels(operation_type).time(),
            tracing.operation_span(**attributes),
        ):
            yield

    def traceparent(self) -> str | None:
        return tracing.current_traceparent()

    def results_recorded(self, results: Sequence[OperationResult]) -> None:
        for result in results:
            # A success is code OK: Prometheus label values are never left empty.
            code = result.error.code.value if result.error else "OK"
            metrics.OPERATIONS.labels(result.outcome.value, code).inc()

    def batch_finished(self, state: BatchState) -> None:
        counter = metrics.DRY_RUNS_FINISHED if state.dry_run else metrics.BATCHES_FINISHED
        counter.labels(state.status.value, state.operation_type).inc()
        if state.duration_seconds is not None:
            metrics.BATCH_DURATION.observe(state.duration_seconds)

    def batch_rejected(self, code: ErrorCode, reason: str) -> None:
        metrics.BATCHES_REJECTED.labels(code.value, reason).inc()

    def database_reachable(self, reachable: bool) -> None:
        metrics.DATABASE_REACHABLE.set(1 if reachable else 0)
        if not reachable:
            metrics.DATABASE_OUTAGES.inc()

    def transaction_retried(self, fault: Fault) -> None:
        metrics.RETRIES.labels(fault.value).inc()
