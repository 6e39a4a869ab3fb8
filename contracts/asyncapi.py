"""AsyncAPI 3.0 document of the broker contract (docs/contract.md), generated from the models.

`batchops schema --asyncapi` writes it to `contracts/schemas/asyncapi.json`; a test fails when
the committed file drifts from what `asyncapi_document()` returns. Broker names come from
`Topology` and routing keys from the functions that build them, so neither can drift either.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contracts._asyncapi_channels import AMQP_BINDING, CHANNELS, REPLIES, ref
from contracts.events import BATCH_EVENT_TYPE, OPERATION_EVENT_TYPE, BatchStatus, Outcome
from contracts.requests import REQUEST_TYPE, OperationType
from contracts.schema import COMMITTED_SCHEMA_DIR, json_schemas, render
from contracts.topology import (
    DEFAULT_NAMESPACE,
    UNKNOWN_OPERATION_TYPE,
)

ASYNCAPI_VERSION = "3.0.0"
_JSON = "application/json"
CONTRACT_VERSION = "1.0.0"
COMMITTED_ASYNCAPI = COMMITTED_SCHEMA_DIR / "asyncapi.json"

_TRACEPARENT = {
    "type": "string",
    "description": "W3C trace context, in the AMQP headers table: optional on a request (set when "
    "the producer traces with OpenTelemetry) and carried on to every event of the batch.",
}
_COMPLETION_STATUSES = [s.value for s in BatchStatus if s.is_terminal and s != BatchStatus.REJECTED]


def _component_schemas(data_schemas: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """The JSON Schema of every model (`contracts.schema`) with their `$defs` hoisted beside them.

    Raises ValueError when two models define different schemas under one name.
    """
    hoisted: dict[str, Any] = {}
    for model_schema in json_schemas(data_schemas).values():
        schema = copy.deepcopy(model_schema)
        # A component is no document of its own: an $id would move the base of its $refs.
        for keyword in ("$schema", "$id"):
            schema.pop(keyword)
        definitions = schema.pop("$defs", {})
        for name, definition in [*definitions.items(), (schema["title"], schema)]:
            rewritten = _point_refs_at_components(definition)
            if hoisted.setdefault(name, rewritten) != rewritten:
                raise ValueError(f"two different schemas are both called {name!r}")
    return hoisted | _PROPERTY_SCHEMAS


def _point_refs_at_components(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(value, str)
                else _point_refs_at_components(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_point_refs_at_components(item) for item in node]
    return node


# AMQP properties of each kind of message, described as AsyncAPI message headers.
_CONTENT_TYPE = {"const": _JSON}
_PERSISTENT = {"const": 2, "description": "persistent"}
_PROPERTY_SCHEMAS: dict[str, Any] = {
    "RequestProperties": {
        "title": "RequestProperties",
        "type": "object",
        "description": "AMQP basic properties of a batch request (sent as properties, not in "
        "the headers table). Only `user_id` is required: the consumer rejects a request "
        "without it. The others are recommended and not checked (docs/contract.md, AMQP "
        "properties).",
        "required": ["user_id"],
        "properties": {
            "content_type": _CONTENT_TYPE,
            "delivery_mode": _PERSISTENT,
            "message_id": {"type": "string", "format": "uuid", "description": "= batch_id"},
            "user_id": {
                "type": "string",
                "description": "The publisher's broker user (RabbitMQ refuses a forged "
                "one); the consumer may restrict it to BATCHOPS_ALLOWED_PUBLISHERS.",
            },
            "correlation_id": {"type": "string", "description": "Echoed on every event."},
            "reply_to": {
                "type": "string",
                "description": "A queue that also receives the completion event, through "
                "the default exchange (request/reply).",
            },
            "type": {"const": REQUEST_TYPE},
            "traceparent": _TRACEPARENT,
        },
    },
    "EventProperties": {
        "title": "EventProperties",
        "type": "object",
        "description": "AMQP basic properties of every event. `message_id` is the event_id, "
        "the same on every re-publication: de-duplicate on it (delivery is at-least-once).",
        "required": ["content_type", "delivery_mode", "message_id", "type"],
        "properties": {
            "content_type": _CONTENT_TYPE,
            "delivery_mode": _PERSISTENT,
            "message_id": {"type": "string", "format": "uuid", "description": "= event_id"},
            "correlation_id": {"type": "string", "description": "The request's, if any."},
            "type": {"enum": [OPERATION_EVENT_TYPE, BATCH_EVENT_TYPE]},
            "traceparent": _TRACEPARENT,
        },
    },
    "DeadLetterProperties": {
        "title": "DeadLetterProperties",
        "type": "object",
        "description": "The original request's properties and headers, plus the headers "
        "RabbitMQ adds when it dead-letters a message. A request that waited in the service's "
        "database under fair share is dead-lettered by the service as a copy: the x-first-death "
        "headers as RabbitMQ sets them, no x-death, and its publisher in "
        "x-batchops-published-by instead of user_id.",
        "properties": {
            "x-death": {"type": "array", "items": {"type": "object"}},
            "x-batchops-published-by": {
                "type": "string",
                "description": "On a copy dead-lettered by the service: the broker user that "
                "published the request (RabbitMQ lets user_id carry only the publishing "
                "connection's own user).",
            },
            "x-first-death-reason": {
                "enum": ["rejected", "delivery_limit", "expired", "maxlen"],
                "description": "`rejected`: the request was refused (see its "
                "batch.<type>.rejected event); `delivery_limit`: a poison message.",
            },
            "x-first-death-queue": {"type": "string"},
            "x-first-death-exchange": {"type": "string"},
        },
    },
}


# name: (summary, payload schema, headers schema, AMQP `type` property)
_MESSAGES: dict[str, tuple[str, str | None, str, str | None]] = {
    "BatchRequest": (
        "1 to 50 operations of one type, run in order on behalf of actor_id "
        "(docs/contract.md, Batch request).",
        "BatchRequest",
        "RequestProperties",
        REQUEST_TYPE,
    ),
    "OperationResult": (
        "The outcome of one operation (docs/contract.md, Operation event).",
        "OperationResult",
        "EventProperties",
        OPERATION_EVENT_TYPE,
    ),
    "BatchCompleted": (
        "A batch finished: completed, partial or failed, with every result "
        "(docs/contract.md, Completion event).",
        "BatchCompleted",
        "EventProperties",
        BATCH_EVENT_TYPE,
    ),
    "BatchRejected": (
        "A request was refused and never executed; the reasons are in `errors`.",
        "BatchRejected",
        "EventProperties",
        BATCH_EVENT_TYPE,
    ),
    "DeadLetter": (
        "A request the consumer refused, or that reached the delivery limit (poison).",
        None,  # the original body, byte for byte: it may be anything a producer sent
        "DeadLetterProperties",
        None,
    ),
}
_EXAMPLE_BATCH_ID = "3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10"
_EXAMPLE_REQUEST = {
    "name": "orderUpdate",
    "headers": {
        "content_type": _JSON,
        "delivery_mode": 2,
        "message_id": _EXAMPLE_BATCH_ID,
        "user_id": "orders-service",
        "type": REQUEST_TYPE,
    },
    "payload": {
        "batch_id": _EXAMPLE_BATCH_ID,
        "operation_type": "order_update",
        "actor_id": 3,
        "mode": "continue",
        "operations": [{"method": "PATCH", "resource_id": 123, "data": {"status": "accepted"}}],
    },
}


def _messages() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for name, (summary, payload, headers, message_type) in _MESSAGES.items():
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "summary": summary,
            "contentType": _JSON,
            "headers": ref("components", "schemas", headers),
            "payload": (
                ref("components", "schemas", payload)
                if payload is not None
                else {
                    "description": "The original request body, byte for byte (it may be invalid)."
                }
            ),
            "correlationId": ref("components", "correlationIds", "correlationId"),
        }
        if message_type is not None:
            message["bindings"] = {
                "amqp": {"messageType": message_type, "bindingVersion": AMQP_BINDING}
            }
        messages[name] = message
    messages["BatchRequest"]["examples"] = [_EXAMPLE_REQUEST]
    return messages


def _parameters() -> dict[str, Any]:
    operation_types = [t.value for t in OperationType]
    return {
        "namespace": {
            "description": "BATCHOPS_NAMESPACE: the prefix of every exchange and queue, so that "
            "environments can share a broker. Exchange names in bindings carry it too.",
            "default": DEFAULT_NAMESPACE,
        },
        "operationType": {"enum": operation_types, "description": "The batch's operation_type."},
        "operationTypeOrUnknown": {
            "enum": [*operation_types, UNKNOWN_OPERATION_TYPE],
            "description": f"The operation_type, or `{UNKNOWN_OPERATION_TYPE}` when the refused "
            "request had no valid one.",
        },
        "outcome": {"enum": [o.value for o in Outcome]},
        "completionStatus": {"enum": _COMPLETION_STATUSES},
        "originalRoutingKey": {
            "description": "Kept from the request (normally its operation_type); the fanout "
            "exchange ignores it and a replay re-uses it."
        },
    }


# id: (action, channel, messages, summary); every message of an operation is in its channel.
_OPERATIONS: dict[str, tuple[str, str, list[str], str]] = {
    "publishBatchRequest": (
        "send",
        "requests",
        ["BatchRequest"],
        "Submit a batch (producers, the publisher library, the HTTP API, the CLI).",
    ),
    "consumeBatchRequest": (
        "receive",
        "requestsQueue",
        ["BatchRequest"],
        "Validate and execute a batch; acked only once it is terminal.",
    ),
    "publishOperationResult": (
        "send",
        "operationEvents",
        ["OperationResult"],
        "Relayed from the outbox with publisher confirms; a stable event_id.",
    ),
    "publishBatchCompletion": (
        "send",
        "batchCompletions",
        ["BatchCompleted"],
        "Relayed from the outbox once the batch is terminal; re-sent for a duplicate.",
    ),
    "publishDryRunCompletion": (
        "send",
        "dryRunCompletions",
        ["BatchCompleted"],
        "Relayed from the outbox once a dry run is terminal (its only event).",
    ),
    "publishBatchRejection": (
        "send",
        "batchRejections",
        ["BatchRejected"],
        "Relayed from the outbox when a request is refused.",
    ),
    "deadLetterRequest": (
        "send",
        "deadLetterExchange",
        ["DeadLetter"],
        "Refused and poison requests are rejected without requeue; RabbitMQ dead-letters them.",
    ),
    "replayDeadLetter": (
        "receive",
        "deadLetters",
        ["DeadLetter"],
        "`batchops dead-letters replay` republishes each to the requests exchange with its "
        "properties and routing key, then removes it; batch_id keeps it idempotent.",
    ),
}
_PUBLISHED_PERSISTENT = {"deliveryMode": 2, "mandatory": True, "bindingVersion": AMQP_BINDING}


def _operations() -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for name, (action, channel, messages, summary) in _OPERATIONS.items():
        operations[name] = {
            "action": action,
            "channel": ref("channels", channel),
            "messages": [ref("channels", channel, "messages", m) for m in messages],
            "summary": summary,
        }
        if name.startswith("publish"):
            operations[name]["bindings"] = {"amqp": dict(_PUBLISHED_PERSISTENT)}
    operations["publishBatchRequest"]["bindings"]["amqp"]["timestamp"] = True
    operations["consumeBatchRequest"] |= {
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING}},
        "reply": {
            "address": {
                "location": "$message.header#/reply_to",
                "description": "The request's reply_to property.",
            },
            "channel": ref("channels", "completionReply"),
            "messages": [ref("channels", "completionReply", "messages", m) for m in REPLIES],
        },
    }
    return operations


def asyncapi_document(
    data_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every channel, operation and message; `data_schemas` as
    for `contracts.schema.json_schemas`."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "batchops",
            "version": CONTRACT_VERSION,
            "description": "Batches of up to 50 operations against a services marketplace, "
            "submitted as RabbitMQ messages; one event per operation and one completion per "
            "batch on the results exchange. Every name is prefixed with the namespace "
            f"(BATCHOPS_NAMESPACE, default `{DEFAULT_NAMESPACE}`). The whole contract, in words, "
            "is docs/contract.md in the batchops repository.",
        },
        "defaultContentType": _JSON,
        "servers": {
            "rabbitmq": {
                "host": "{host}:{port}",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker of BATCHOPS_AMQP_URL.",
                "variables": {"host": {"default": "localhost"}, "port": {"default": "5672"}},
            }
        },
        "channels": CHANNELS,
        "operations": _operations(),
        "components": {
            "schemas": _component_schemas(data_schemas),
            "messages": _messages(),
            "parameters": _parameters(),
            "correlationIds": {
                "correlationId": {
                    "description": "The request's correlation_id, echoed on every event.",
                    "location": "$message.header#/correlation_id",
                }
            },
        },
    }


def write_asyncapi(
    path: Path = COMMITTED_ASYNCAPI,
    data_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the document as sorted, indented JSON (the committed form); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(asyncapi_document(data_schemas)), encoding="utf-8")
    return path
