"""The AsyncAPI document (contracts/asyncapi.py): committed as generated, structurally sound,
and covering every exchange, queue, routing key and message of docs/contract.md."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from consumer.domain.payloads import data_schemas
from contracts import (
    UNKNOWN_OPERATION_TYPE,
    BatchRequest,
    BatchStatus,
    OperationType,
    Outcome,
    Topology,
    batch_routing_key,
    dryrun_routing_key,
    operation_routing_key,
)
from contracts.asyncapi import COMMITTED_ASYNCAPI, asyncapi_document
from contracts.schema import SCHEMA_MODELS, json_schemas, render

NAMES = Topology("{namespace}")
DOCUMENT = asyncapi_document(data_schemas())


def resolve(document: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON pointer (RFC 6901) such as `#/components/messages/BatchRequest`."""
    assert ref.startswith("#/"), f"only local references are used, not {ref!r}"
    node: Any = document
    for token in ref[2:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref!r} goes through a non-object at {key!r}"
        assert key in node, f"{ref!r} does not resolve at {key!r}"
        node = node[key]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def placeholders(address: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", address))


def expand(channel: dict[str, Any]) -> set[str]:
    """Every concrete address of a channel, its parameters replaced by each enum value."""
    names = sorted(placeholders(channel["address"]))
    choices = [resolve(DOCUMENT, channel["parameters"][n]["$ref"])["enum"] for n in names]
    return {
        channel["address"].format(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*choices)
    }


def channels_on(exchange: str) -> list[dict[str, Any]]:
    return [
        channel
        for channel in DOCUMENT["channels"].values()
        if channel.get("bindings", {}).get("amqp", {}).get("exchange", {}).get("name") == exchange
    ]


class TestTheCommittedDocument:
    @pytest.mark.generated
    def test_the_committed_document_is_what_the_contracts_generate(self) -> None:
        assert COMMITTED_ASYNCAPI.exists(), "run `batchops schema --asyncapi`"
        # Compared as JSON: pydantic releases within our floor spell 0 and 0.0 differently.
        committed = json.loads(COMMITTED_ASYNCAPI.read_text(encoding="utf-8"))
        assert committed == json.loads(render(asyncapi_document(data_schemas()))), (
            f"{COMMITTED_ASYNCAPI.name} is out of date: run `make schema`"
        )

    def test_generating_twice_gives_the_same_document(self) -> None:
        assert render(asyncapi_document(data_schemas())) == render(
            asyncapi_document(data_schemas())
        )


class TestStructure:
    def test_it_is_an_asyncapi_3_document_with_channels_operations_and_messages(self) -> None:
        assert DOCUMENT["asyncapi"] == "3.0.0"
        assert DOCUMENT["info"]["title"] == "batchops"
        assert DOCUMENT["info"]["version"]
        assert DOCUMENT["channels"]
        assert DOCUMENT["operations"]
        assert DOCUMENT["components"]["messages"]
        assert json.loads(render(DOCUMENT)) == DOCUMENT, "the document is plain JSON"

    def test_every_reference_resolves(self) -> None:
        found = refs(DOCUMENT)

        assert found, "the document uses references"
        for ref in found:
            resolve(DOCUMENT, ref)

    def test_every_operation_sends_or_receives_only_messages_of_its_channel(self) -> None:
        for name, operation in DOCUMENT["operations"].items():
            assert operation["action"] in {"send", "receive"}, name
            channel = operation["channel"]["$ref"]
            assert resolve(DOCUMENT, channel) is not None
            for message in operation["messages"]:
                assert message["$ref"].startswith(f"{channel}/messages/"), (name, message)

    def test_every_channel_address_names_exactly_its_parameters(self) -> None:
        for name, channel in DOCUMENT["channels"].items():
            address = channel["address"]
            declared = set(channel.get("parameters", {}))
            assert placeholders(address or "") == declared, name

    def test_every_message_is_carried_by_some_channel_and_operation(self) -> None:
        in_channels = {
            ref["$ref"] for ch in DOCUMENT["channels"].values() for ref in ch["messages"].values()
        }
        operated = {
            resolve(DOCUMENT, ref["$ref"])["$ref"]
            for operation in DOCUMENT["operations"].values()
            for ref in operation["messages"]
        }
        every = {f"#/components/messages/{name}" for name in DOCUMENT["components"]["messages"]}

        assert in_channels == every
        assert operated == every


class TestCoverage:
    def test_every_exchange_and_queue_of_the_topology_is_described(self) -> None:
        exchanges = {
            (b["exchange"]["name"], b["exchange"]["type"])
            for ch in DOCUMENT["channels"].values()
            if (b := ch.get("bindings", {}).get("amqp", {})).get("is") == "routingKey"
        }
        queues = {
            ch["bindings"]["amqp"]["queue"]["name"]
            for ch in DOCUMENT["channels"].values()
            if ch.get("bindings", {}).get("amqp", {}).get("is") == "queue"
        }

        assert exchanges == {
            (NAMES.requests_exchange, "topic"),
            (NAMES.results_exchange, "topic"),
            (NAMES.dead_letter_exchange, "fanout"),
        }
        assert queues == {
            NAMES.requests_queue,
            NAMES.dead_letter_queue,
            NAMES.dead_letter_reconcile_queue,
        }

    def test_the_work_queue_is_described_with_the_arguments_the_code_declares(self) -> None:
        queue = DOCUMENT["channels"]["requestsQueue"]["bindings"]["amqp"]

        assert queue["x-arguments"] == NAMES.requests_queue_arguments()
        assert queue["x-arguments"]["x-queue-type"] == "quorum"
        assert queue["x-bindings"] == [{"exchange": NAMES.requests_exchange, "routingKey": "#"}]

    def test_requests_are_routed_by_operation_type(self) -> None:
        (channel,) = channels_on(NAMES.requests_exchange)

        assert expand(channel) == {t.value for t in OperationType}

    def test_every_event_routing_key_the_code_can_produce_is_described(self) -> None:
        types = [t.value for t in OperationType]
        finished = [s.value for s in BatchStatus if s.is_terminal and s != BatchStatus.REJECTED]
        produced = (
            {operation_routing_key(t, o.value) for t in types for o in Outcome}
            | {batch_routing_key(t, s) for t in types for s in finished}
            | {batch_routing_key(t, "rejected") for t in [*types, UNKNOWN_OPERATION_TYPE]}
            | {dryrun_routing_key(t, s) for t in types for s in finished}
        )

        described = set().union(*(expand(ch) for ch in channels_on(NAMES.results_exchange)))

        assert described == produced
        assert "batch.unknown.rejected" in described

    def test_every_model_is_the_payload_of_a_message_with_its_schema(self) -> None:
        schemas = DOCUMENT["components"]["schemas"]
        payloads = {
            m["payload"]["$ref"].rsplit("/", 1)[-1]
            for m in DOCUMENT["components"]["messages"].values()
            if "$ref" in m["payload"]
        }

        for name, model in SCHEMA_MODELS.items():
            title = model.__name__
            assert title in payloads
            assert set(schemas[title]["properties"]) == set(
                json_schemas(data_schemas())[name]["properties"]
            )
            assert "$defs" not in schemas[title], "definitions are hoisted into components"

    def test_the_request_requires_only_the_amqp_properties_the_consumer_enforces(self) -> None:
        message = DOCUMENT["components"]["messages"]["BatchRequest"]
        properties = resolve(DOCUMENT, message["headers"]["$ref"])

        # Only what the consumer enforces is required; the rest is documented as recommended.
        assert properties["required"] == ["user_id"]
        assert {"content_type", "delivery_mode", "message_id", "type"} <= set(
            properties["properties"]
        )
        assert {"correlation_id", "reply_to"} <= set(properties["properties"])
        assert properties["properties"]["type"] == {"const": "batchops.request.v1"}
        assert message["bindings"]["amqp"]["messageType"] == "batchops.request.v1"

    def test_the_completion_is_also_the_reply_to_the_request_reply_to_queue(self) -> None:
        reply = DOCUMENT["operations"]["consumeBatchRequest"]["reply"]

        assert reply["address"]["location"] == "$message.header#/reply_to"
        assert resolve(DOCUMENT, reply["channel"]["$ref"])["address"] is None
        assert {r["$ref"].rsplit("/", 1)[-1] for r in reply["messages"]} == {
            "BatchCompleted",
            "BatchRejected",
        }

    def test_the_namespace_is_a_parameter_defaulting_to_batchops(self) -> None:
        namespace = DOCUMENT["components"]["parameters"]["namespace"]

        assert namespace["default"] == "batchops"
        assert DOCUMENT["channels"]["deadLetters"]["address"] == "{namespace}.dead"

    @pytest.mark.parametrize(
        "example", DOCUMENT["components"]["messages"]["BatchRequest"]["examples"]
    )
    def test_the_request_example_is_a_valid_batch_request(self, example: dict[str, Any]) -> None:
        request = BatchRequest.model_validate_json(json.dumps(example["payload"]))

        assert example["headers"]["message_id"] == str(request.batch_id)
