"""Build the events of docs/contract.md ("Events") and the outbox messages that carry them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.domain.batch import BatchState
from consumer.service_layer.intake import Rejection
from consumer.service_layer.telemetry import Telemetry
from consumer.service_layer.unit_of_work import OutboxMessage
from contracts import (
    BatchCompleted,
    BatchRejected,
    ErrorCode,
    OperationError,
    OperationResult,
    Outcome,
    Topology,
    batch_routing_key,
    completion_event_id,
    dryrun_routing_key,
    operation_event_id,
)

_NO_RESULTS = b'"results":[]'


class EventFactory:
    """Events and their outbox messages for one namespace."""

    def __init__(self, topology: Topology, telemetry: Telemetry | None = None) -> None:
        self._topology = topology
        # Events carry the trace context they were made in, when the process traces.
        self.traceparent = (telemetry or Telemetry()).traceparent

    def succeeded(
        self,
        batch: BatchState,
        correlation_id: str | None,
        index: int,
        resource_id: int,
        data: dict[str, Any],
        now: datetime,
    ) -> OperationResult:
        return OperationResult(
            event_id=operation_event_id(batch.batch_id, index),
            batch_id=batch.batch_id,
            correlation_id=correlation_id,
            operation_type=batch.operation_type,
            index=index,
            resource_id=resource_id,
            status=200,
            success=True,
            outcome=Outcome.SUCCEEDED,
            data=data,
            occurred_at=now,
            retry_of=batch.retry_of,
        )

    def failed(
        self,
        batch: BatchState,
        correlation_id: str | None,
        index: int,
        resource_id: int,
        code: ErrorCode,
        message: str,
        now: datetime,
    ) -> OperationResult:
        return OperationResult(
            event_id=operation_event_id(batch.batch_id, index),
            batch_id=batch.batch_id,
            correlation_id=correlation_id,
            operation_type=batch.operation_type,
            index=index,
            resource_id=resource_id,
            status=code.status,
            success=False,
            outcome=Outcome.SKIPPED if code is ErrorCode.SKIPPED else Outcome.FAILED,
            error=OperationError(code=code, message=message, type=code.error_type),
            occurred_at=now,
            retry_of=batch.retry_of,
        )

    def completion(
        self, batch: BatchState, correlation_id: str | None, results: list[OperationResult]
    ) -> BatchCompleted:
        if batch.completed_at is None:
            raise ValueError("only a completed batch has a completion event")
        return BatchCompleted(
            event_id=completion_event_id(batch.batch_id),
            batch_id=batch.batch_id,
            correlation_id=correlation_id,
            operation_type=batch.operation_type,
            status=batch.status,  # type: ignore[arg-type]  # terminal, checked by complete()
            total_operations=batch.total,
            completed_operations=batch.completed,
            failed_operations=batch.failed,
            skipped_operations=batch.skipped,
            success_rate=batch.success_rate,
            progress=batch.progress,
            created_at=batch.created_at,
            started_at=batch.started_at,
            completed_at=batch.completed_at,
            duration_seconds=batch.duration_seconds,
            results=results,
            dry_run=batch.dry_run,
            retry_of=batch.retry_of,
        )

    def completion_body(
        self, batch: BatchState, correlation_id: str | None, results: list[bytes]
    ) -> bytes:
        """`completion(...)` as JSON, its results the operation events' own JSON as stored,
        byte for byte: decoding and encoding them again costs more than the rest of a batch's
        completion and yields the same bytes."""
        head = self.completion(batch, correlation_id, []).model_dump_json().encode()
        # The only match is the field itself: inside a JSON string every quote is escaped.
        at = head.index(_NO_RESULTS)
        spliced = b'"results":[' + b",".join(results) + b"]"
        return head[:at] + spliced + head[at + len(_NO_RESULTS) :]

    def rejected(
        self, rejection: Rejection, correlation_id: str | None, now: datetime
    ) -> BatchRejected:
        return BatchRejected(
            event_id=rejection.event_id,
            batch_id=rejection.batch_id,
            correlation_id=correlation_id,
            operation_type=rejection.operation_type,
            code=rejection.code,
            errors=rejection.errors,
            rejected_at=now,
        )

    @staticmethod
    def completion_routing_key(batch: BatchState) -> str:
        """`batch.<type>.<status>`, or `dryrun.<type>.<status>` for a dry run."""
        route = dryrun_routing_key if batch.dry_run else batch_routing_key
        return route(batch.operation_type, batch.status.value)

    def batch_messages(
        self,
        routing_key: str,
        event_id: UUID,
        body: bytes,
        correlation_id: str | None,
        reply_to: str | None = None,
        reply_correlation_id: str | None = None,
    ) -> list[OutboxMessage]:
        """The completion or rejection for subscribers, plus a copy to `reply_to` if asked.

        The copy carries the asking message's correlation id, which a re-submission may change.
        """
        messages = [
            OutboxMessage(
                exchange=self._topology.results_exchange,
                routing_key=routing_key,
                message_id=event_id,
                correlation_id=correlation_id,
                body=body,
                traceparent=self.traceparent(),
            )
        ]
        if reply_to:
            # Default exchange; the caller's reply queue may be gone, which is no failure of ours.
            messages.append(
                OutboxMessage(
                    exchange="",
                    routing_key=reply_to,
                    message_id=event_id,
                    correlation_id=reply_correlation_id,
                    body=body,
                    mandatory=False,
                    traceparent=self.traceparent(),
                )
            )
        return messages
