"""Prometheus metrics of the process (served on `/metrics`)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram

__all__ = [
    "BATCHES_FINISHED",
    "BATCHES_REJECTED",
    "BATCH_DURATION",
    "OPERATIONS",
    "REGISTRY",
]

BATCHES_FINISHED = Counter(
    "batchops_batches_finished_total",
    "Batches that reached a terminal status",
    ["status", "operation_type"],
)
BATCHES_REJECTED = Counter(
    "batchops_batches_rejected_total", "Requests refused before execution", ["code"]
)
OPERATIONS = Counter(
    "batchops_operations_total", "Operations by outcome and error code", ["outcome", "code"]
)
BATCH_DURATION = Histogram(
    "batchops_batch_duration_seconds",
    "From the start of processing to the terminal status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
