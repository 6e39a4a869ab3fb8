"""Prometheus metrics of the process (served on `/metrics`)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

__all__ = [
    "BATCHES_FINISHED",
    "BATCHES_REJECTED",
    "BATCH_DURATION",
    "DATABASE_OUTAGES",
    "DATABASE_REACHABLE",
    "DEAD_LETTERED",
    "DRY_RUNS_FINISHED",
    "EVENTS_RELAYED",
    "FAIR_SHARE_WAITING",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "IN_FLIGHT",
    "OPERATIONS",
    "OPERATION_DURATION",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_AGE",
    "PARKED",
    "QUEUE_CONSUMERS",
    "QUEUE_MESSAGES",
    "REDELIVERIES",
    "REGISTRY",
    "RETRIES",
    "WEBHOOK_TRIES",
]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

BATCHES_FINISHED = Counter(
    "batchops_batches_finished_total",
    "Batches that reached a terminal status",
    ["status", "operation_type"],
)
DRY_RUNS_FINISHED = Counter(
    "batchops_dry_runs_finished_total",
    "Dry runs that reached a terminal status (apart from batches: they changed nothing)",
    ["status", "operation_type"],
)
BATCHES_REJECTED = Counter(
    "batchops_batches_rejected_total",
    "Requests refused before execution, by error code and the kind of the first fault",
    ["code", "reason"],
)
OPERATIONS = Counter(
    "batchops_operations_total",
    "Operations by outcome and error code (OK for a success)",
    ["outcome", "code"],
)
BATCH_DURATION = Histogram(
    "batchops_batch_duration_seconds",
    "From the start of processing to the terminal status",
    buckets=_SECONDS,
)
OPERATION_DURATION = Histogram(
    "batchops_operation_duration_seconds",
    "One operation's transaction, retries included",
    ["operation_type"],
    buckets=_SECONDS,
)
REDELIVERIES = Counter(
    "batchops_redeliveries_total", "Requests delivered again (after a crash, a requeue)"
)
FAIR_SHARE_WAITING = Gauge(
    "batchops_fair_share_waiting",
    "Requests waiting for a slot under fair share (parked in the database, the namespace's "
    "count as this process last saw it)",
)
PARKED = Counter(
    "batchops_fair_share_parked_total",
    "Requests this process parked in the database to wait for a slot under fair share",
)
DEAD_LETTERED = Counter(
    "batchops_dead_lettered_total", "Requests sent to the dead-letter queue by the consumer"
)
IN_FLIGHT = Gauge("batchops_consumer_in_flight", "Batches this process is running now")
EVENTS_RELAYED = Counter(
    "batchops_events_relayed_total",
    "Outbox events published (confirmed) or dropped as unroutable",
    ["result"],
)
OUTBOX_BACKLOG = Gauge("batchops_outbox_backlog", "Events committed but not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "batchops_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished event"
)
DATABASE_REACHABLE = Gauge(
    "batchops_database_reachable", "1 while the database answers, 0 during an outage"
)
DATABASE_REACHABLE.set(1)
DATABASE_OUTAGES = Counter(
    "batchops_database_outages_total", "Times the database stopped answering (outages begun)"
)
RETRIES = Counter(
    "batchops_transaction_retries_total",
    "Transactions tried again after the database refused them or a connection broke",
    ["fault"],
)
WEBHOOK_TRIES = Counter(
    "batchops_webhook_tries_total",
    "Webhook deliveries tried, by how the try ended: delivered, failed (to be tried again) "
    "or given_up (the last try failed)",
    ["outcome"],
)
HTTP_REQUESTS = Counter(
    "batchops_http_requests_total",
    "HTTP requests answered, by method, route template (not the raw path) and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "batchops_http_request_duration_seconds",
    "From a request's arrival to the end of its answer",
    ["method", "route"],
    buckets=_SECONDS,
)
QUEUE_MESSAGES = Gauge(
    "batchops_queue_messages",
    "Messages ready in a batchops queue, read from the broker on a timer (passive declare)",
    ["queue"],
)
QUEUE_CONSUMERS = Gauge(
    "batchops_queue_consumers",
    "Consumers attached to a batchops queue, read with the depth",
    ["queue"],
)
