"""The channels of the AsyncAPI document (contracts/asyncapi.py): every exchange, queue and
routing key of the broker contract, with the namespace left as a parameter."""

from __future__ import annotations

from typing import Any

from contracts.events import BatchStatus
from contracts.topology import (
    DEFAULT_DELIVERY_LIMIT,
    Topology,
    batch_routing_key,
    dryrun_routing_key,
    operation_routing_key,
)

AMQP_BINDING = "0.3.0"
# Every broker name with the namespace left as a channel address expression.
NAMES = Topology("{namespace}", DEFAULT_DELIVERY_LIMIT)
REPLIES = ("BatchCompleted", "BatchRejected")


def ref(*path: str) -> dict[str, str]:
    # JSON pointer escaping (RFC 6901): "/" in a key is "~1".
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _routing_key_channel(
    address: str,
    exchange: str,
    kind: str,
    parameters: dict[str, str],
    messages: list[str],
    description: str,
) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "parameters": {name: ref("components", "parameters", p) for name, p in parameters.items()},
        "messages": {m: ref("components", "messages", m) for m in messages},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": kind, "durable": True, "autoDelete": False},
                "bindingVersion": AMQP_BINDING,
            }
        },
    }


def _queue_channel(
    name: str, messages: list[str], description: str, extensions: dict[str, Any]
) -> dict[str, Any]:
    return {
        "address": name,
        "description": description,
        "parameters": {"namespace": ref("components", "parameters", "namespace")},
        "messages": {m: ref("components", "messages", m) for m in messages},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
                "bindingVersion": AMQP_BINDING,
                **extensions,
            }
        },
    }


_RESULTS = NAMES.results_exchange
# Every channel of the contract, by id.
CHANNELS: dict[str, Any] = {
    "requests": _routing_key_channel(
        "{operation_type}",
        NAMES.requests_exchange,
        "topic",
        {"operation_type": "operationType"},
        ["BatchRequest"],
        "Producers publish batch requests to the requests exchange with routing key = "
        "operation_type, persistent, with publisher confirms and `mandatory`.",
    ),
    "requestsQueue": _queue_channel(
        NAMES.requests_queue,
        ["BatchRequest"],
        "The consumers' work queue (quorum), bound to the requests exchange with `#`; "
        "competing consumers scale out. After x-delivery-limit deliveries (or when refused) "
        "a request is dead-lettered.",
        {
            "x-arguments": NAMES.requests_queue_arguments(),
            "x-bindings": [{"exchange": NAMES.requests_exchange, "routingKey": "#"}],
        },
    ),
    "operationEvents": _routing_key_channel(
        operation_routing_key("{operation_type}", "{outcome}"),
        _RESULTS,
        "topic",
        {"operation_type": "operationType", "outcome": "outcome"},
        ["OperationResult"],
        "One event per operation. Bind e.g. `operation.*.failed` for every failure.",
    ),
    "batchCompletions": _routing_key_channel(
        batch_routing_key("{operation_type}", "{status}"),
        _RESULTS,
        "topic",
        {"operation_type": "operationType", "status": "completionStatus"},
        ["BatchCompleted"],
        "One completion per executed batch. `batch.#` matches completions and rejections.",
    ),
    "dryRunCompletions": _routing_key_channel(
        dryrun_routing_key("{operation_type}", "{status}"),
        _RESULTS,
        "topic",
        {"operation_type": "operationType", "status": "completionStatus"},
        ["BatchCompleted"],
        "The completion of a dry run (`dry_run: true`), its only event: the results say what "
        "would have happened, nothing changed. `dryrun.#` matches every one.",
    ),
    "batchRejections": _routing_key_channel(
        batch_routing_key("{operation_type}", BatchStatus.REJECTED.value),
        _RESULTS,
        "topic",
        {"operation_type": "operationTypeOrUnknown"},
        ["BatchRejected"],
        "A refused request: invalid, too large, no user_id, unknown handler, or a batch_id "
        "re-used with another body (CONFLICT). The request is dead-lettered.",
    ),
    "completionReply": {
        "address": None,
        "description": "The request's `reply_to` queue, through the default exchange: it "
        "receives a copy of the completion or rejection, with the request's correlation_id.",
        "messages": {m: ref("components", "messages", m) for m in REPLIES},
    },
    "deadLetterExchange": _routing_key_channel(
        "{routing_key}",
        NAMES.dead_letter_exchange,
        "fanout",
        {"routing_key": "originalRoutingKey"},
        ["DeadLetter"],
        "The work queue's dead-letter exchange (fanout).",
    ),
    "deadLetters": _queue_channel(
        NAMES.dead_letter_queue,
        ["DeadLetter"],
        "Poison and refused requests, kept for inspection (`batchops dead-letters list`) "
        "and replay to the requests exchange (`batchops dead-letters replay`).",
        {"x-bindings": [{"exchange": NAMES.dead_letter_exchange, "routingKey": ""}]},
    ),
    "deadLetterReconcile": _queue_channel(
        NAMES.dead_letter_reconcile_queue,
        ["DeadLetter"],
        "The consumers' own copy of every dead letter: a request the broker dropped after "
        "the delivery limit still gets its batch finished (the crashing operation "
        "INTERNAL_ERROR, the rest SKIPPED) and its completion published. Not for operators.",
        {"x-bindings": [{"exchange": NAMES.dead_letter_exchange, "routingKey": ""}]},
    ),
}
