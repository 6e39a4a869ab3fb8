"""The wire contract (contracts/): request validation, event shapes and ids, names, schemas."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import contracts
import publisher
from consumer.domain.payloads import data_schemas
from contracts import (
    BatchCompleted,
    BatchRejected,
    BatchRequest,
    BatchStatus,
    ErrorCode,
    Mode,
    OperationError,
    OperationResult,
    OperationType,
    Outcome,
    RejectionReason,
    Topology,
    batch_routing_key,
    completion_event_id,
    operation_event_id,
    operation_routing_key,
    parse_event,
    rejection_event_id,
)
from contracts.requests import MAX_ID
from contracts.schema import COMMITTED_SCHEMA_DIR, SCHEMA_MODELS, json_schemas, render

BATCH_ID = uuid.UUID("3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10")
OTHER_BATCH_ID = uuid.UUID("9a1b7c3d-0e2f-4a5b-8c6d-7e8f9a0b1c2d")
NOW = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)

# A request as docs/contract.md shows one.
CONTRACT_EXAMPLE = """
{
  "batch_id": "3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10",
  "operation_type": "order_update",
  "actor_id": 3,
  "mode": "continue",
  "operations": [
    {"method": "PATCH", "resource_id": 123, "data": {"status": "accepted"}},
    {"method": "PATCH", "resource_id": 124, "data": {"notes": "call before arriving"}}
  ]
}
"""


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(CONTRACT_EXAMPLE)
    body.update(overrides)
    return body


def an_operation(resource_id: int = 1) -> dict[str, Any]:
    return {"method": "PATCH", "resource_id": resource_id, "data": {"notes": "x"}}


def validate(body: dict[str, Any]) -> BatchRequest:
    return BatchRequest.model_validate_json(json.dumps(body))


def error_locations(exc: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(err["loc"]) for err in exc.errors()]


def succeeded_result(index: int = 0) -> OperationResult:
    return OperationResult(
        event_id=operation_event_id(BATCH_ID, index),
        batch_id=BATCH_ID,
        correlation_id="corr-1",
        operation_type="order_update",
        index=index,
        resource_id=123,
        status=200,
        success=True,
        outcome=Outcome.SUCCEEDED,
        data={"id": 123, "status": "accepted"},
        occurred_at=NOW,
    )


def failed_result(index: int = 1) -> OperationResult:
    return OperationResult(
        event_id=operation_event_id(BATCH_ID, index),
        batch_id=BATCH_ID,
        operation_type="order_update",
        index=index,
        resource_id=124,
        status=403,
        success=False,
        outcome=Outcome.FAILED,
        error=OperationError(
            code=ErrorCode.PERMISSION_DENIED, message="not yours", type="PermissionError"
        ),
        occurred_at=NOW,
    )


def a_completion() -> BatchCompleted:
    return BatchCompleted(
        event_id=completion_event_id(BATCH_ID),
        batch_id=BATCH_ID,
        correlation_id="corr-1",
        operation_type="order_update",
        status=BatchStatus.PARTIAL,
        total_operations=2,
        completed_operations=1,
        failed_operations=1,
        skipped_operations=0,
        success_rate=50.0,
        progress=100.0,
        created_at=NOW,
        started_at=NOW,
        completed_at=NOW,
        duration_seconds=0.0,
        results=[succeeded_result(0), failed_result(1)],
    )


def a_rejection() -> BatchRejected:
    return BatchRejected(
        event_id=rejection_event_id(b"{}", "abc"),
        batch_id=BATCH_ID,
        operation_type="order_update",
        code=ErrorCode.VALIDATION_ERROR,
        errors=[RejectionReason(loc=["operations", 0, "resource_id"], msg="bad", type="x")],
        rejected_at=NOW,
    )


class TestBatchRequestAccepts:
    def test_the_design_example_is_valid(self):
        request = BatchRequest.model_validate_json(CONTRACT_EXAMPLE)
        assert request.batch_id == BATCH_ID
        assert request.operation_type is OperationType.ORDER_UPDATE
        assert request.actor_id == 3
        assert [op.resource_id for op in request.operations] == [123, 124]
        assert request.operations[1].data == {"notes": "call before arriving"}

    def test_mode_defaults_to_continue(self):
        body = request_body()
        del body["mode"]
        assert validate(body).mode is Mode.CONTINUE

    @pytest.mark.parametrize("mode", list(Mode))
    def test_every_mode_of_the_design_is_accepted(self, mode):
        assert validate(request_body(mode=mode.value)).mode is mode

    def test_fifty_operations_are_accepted(self):
        operations = [an_operation(i) for i in range(1, 51)]
        assert len(validate(request_body(operations=operations)).operations) == 50

    def test_data_defaults_to_an_empty_object(self):
        operations = [{"method": "DELETE", "resource_id": 7}]
        assert validate(request_body(operations=operations)).operations[0].data == {}

    def test_custom_with_a_handler_is_accepted(self):
        request = validate(request_body(operation_type="custom", handler="acme.reindex"))
        assert request.handler == "acme.reindex"

    def test_a_request_built_from_a_plain_dict_as_the_readme_shows_is_valid(self):
        request = BatchRequest.model_validate(
            {
                "batch_id": str(BATCH_ID),
                "operation_type": "order_update",
                "actor_id": 6,
                "operations": [{"method": "PATCH", "resource_id": 3, "data": {"status": "x"}}],
            }
        )
        assert request.batch_id == BATCH_ID


class TestBatchRequestRejects:
    def test_fifty_one_operations_are_refused(self):
        operations = [an_operation(i) for i in range(1, 52)]
        with pytest.raises(ValidationError) as caught:
            validate(request_body(operations=operations))
        assert ("operations",) in error_locations(caught.value)

    def test_no_operations_are_refused(self):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(operations=[]))
        assert ("operations",) in error_locations(caught.value)

    def test_an_unknown_top_level_field_is_refused(self):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(priority="high"))
        assert ("priority",) in error_locations(caught.value)

    def test_an_unknown_field_in_an_operation_is_refused(self):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(operations=[an_operation() | {"etag": "w/1"}]))
        assert ("operations", 0, "etag") in error_locations(caught.value)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("actor_id", "3"),
            ("actor_id", 0),
            ("actor_id", 3.5),
            ("actor_id", True),
            ("batch_id", "not-a-uuid"),
            ("batch_id", 42),
            ("operation_type", "order_delete"),
            ("mode", "best_effort"),
        ],
    )
    def test_a_wrong_top_level_type_or_value_is_refused(self, field, value):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(**{field: value}))
        assert (field,) in error_locations(caught.value)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("resource_id", 0),
            ("resource_id", -1),
            ("resource_id", "123"),
            ("method", "GET"),
            ("method", "patch"),
            ("data", ["status", "accepted"]),
            ("data", "status=accepted"),
        ],
    )
    def test_a_wrong_operation_type_or_value_is_refused(self, field, value):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(operations=[an_operation() | {field: value}]))
        assert any(loc[:3] == ("operations", 0, field) for loc in error_locations(caught.value))

    def test_custom_without_a_handler_is_refused(self):
        with pytest.raises(ValidationError, match="needs a 'handler'"):
            validate(request_body(operation_type="custom"))

    def test_a_handler_with_a_type_other_than_custom_is_refused(self):
        with pytest.raises(ValidationError, match="only allowed with operation_type 'custom'"):
            validate(request_body(handler="acme.reindex"))

    @pytest.mark.parametrize("handler", ["", "has space", "semi;colon", "h" * 101])
    def test_a_malformed_handler_name_is_refused(self, handler):
        with pytest.raises(ValidationError) as caught:
            validate(request_body(operation_type="custom", handler=handler))
        assert ("handler",) in error_locations(caught.value)

    @pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"null", b'{"batch_id": '])
    def test_a_body_that_is_not_a_json_object_is_refused(self, body):
        with pytest.raises(ValidationError):
            BatchRequest.model_validate_json(body)


class TestOperationResultSerialisation:
    def test_a_success_carries_data_and_no_error(self):
        body = json.loads(succeeded_result().model_dump_json())
        assert body["data"] == {"id": 123, "status": "accepted"}
        assert "error" not in body, f"a success must not carry an error key: {body}"

    def test_a_failure_carries_an_error_and_no_data(self):
        body = json.loads(failed_result().model_dump_json())
        assert body["error"] == {
            "code": "PERMISSION_DENIED",
            "message": "not yours",
            "type": "PermissionError",
        }
        assert "data" not in body, f"a failure must not carry a data key, not even null: {body}"

    def test_the_python_dump_omits_the_same_keys(self):
        assert "error" not in succeeded_result().model_dump()
        assert "data" not in failed_result().model_dump()

    def test_results_inside_a_completion_omit_them_too(self):
        results = json.loads(a_completion().model_dump_json())["results"]
        assert "error" not in results[0]
        assert "data" not in results[1]

    def test_an_operation_event_has_the_documented_fields(self):
        body = json.loads(succeeded_result().model_dump_json())
        assert set(body) == {
            "event_id",
            "event_type",
            "batch_id",
            "correlation_id",
            "operation_type",
            "index",
            "resource_id",
            "status",
            "success",
            "outcome",
            "data",
            "occurred_at",
        }
        assert body["event_type"] == "batchops.operation.v1"
        assert body["outcome"] == "succeeded"


class TestErrorCodes:
    def test_every_code_has_its_documented_status(self):
        assert {code.value: code.status for code in ErrorCode} == {
            "VALIDATION_ERROR": 400,
            "PERMISSION_DENIED": 403,
            "NOT_FOUND": 404,
            "METHOD_NOT_ALLOWED": 405,
            "CONFLICT": 409,
            "SKIPPED": 424,
            "INTERNAL_ERROR": 500,
            "UNAVAILABLE": 503,
        }


class TestEventIds:
    def test_an_operation_event_id_is_the_same_for_the_same_batch_and_index(self):
        assert operation_event_id(BATCH_ID, 3) == operation_event_id(BATCH_ID, 3)

    def test_an_operation_event_id_differs_by_index_and_by_batch(self):
        ids = {
            operation_event_id(BATCH_ID, 0),
            operation_event_id(BATCH_ID, 1),
            operation_event_id(OTHER_BATCH_ID, 0),
        }
        assert len(ids) == 3

    def test_a_completion_event_id_is_the_same_for_the_same_batch(self):
        assert completion_event_id(BATCH_ID) == completion_event_id(BATCH_ID)

    def test_a_completion_event_id_differs_by_batch_and_from_every_operation_id(self):
        assert completion_event_id(BATCH_ID) != completion_event_id(OTHER_BATCH_ID)
        operation_ids = {operation_event_id(BATCH_ID, i) for i in range(50)}
        assert completion_event_id(BATCH_ID) not in operation_ids

    def test_a_rejection_event_id_is_the_same_for_the_same_bytes_and_message_id(self):
        assert rejection_event_id(b"x", "m1") == rejection_event_id(b"x", "m1")

    def test_a_rejection_event_id_differs_by_message_id_even_for_the_same_bytes(self):
        assert rejection_event_id(b"x", "m1") != rejection_event_id(b"x", "m2")
        assert rejection_event_id(b"x", "m1") != rejection_event_id(b"x", None)

    def test_a_rejection_event_id_differs_by_bytes(self):
        assert rejection_event_id(b"x", None) != rejection_event_id(b"y", None)

    def test_event_ids_are_name_based_uuids(self):
        assert operation_event_id(BATCH_ID, 0).version == 5
        assert completion_event_id(BATCH_ID).version == 5


class TestRoutingKeys:
    @pytest.mark.parametrize("outcome", list(Outcome))
    def test_operation_events_are_routed_by_type_and_outcome(self, outcome):
        key = operation_routing_key("order_update", outcome.value)
        assert key == f"operation.order_update.{outcome.value}"

    @pytest.mark.parametrize("status", ["completed", "partial", "failed", "rejected"])
    def test_batch_events_are_routed_by_type_and_status(self, status):
        assert batch_routing_key("order_update", status) == f"batch.order_update.{status}"

    def test_a_rejection_without_a_valid_type_is_routed_as_unknown(self):
        assert contracts.UNKNOWN_OPERATION_TYPE == "unknown"
        assert batch_routing_key("unknown", "rejected") == "batch.unknown.rejected"


class TestTopology:
    def test_the_default_namespace_is_batchops(self):
        topology = Topology()
        assert (topology.namespace, topology.delivery_limit) == ("batchops", 5)

    def test_every_name_is_prefixed_with_the_namespace(self):
        topology = Topology("test-1a2b")
        assert topology.requests_exchange == "test-1a2b.requests"
        assert topology.requests_queue == "test-1a2b.requests"
        assert topology.dead_letter_exchange == "test-1a2b.dlx"
        assert topology.dead_letter_queue == "test-1a2b.dead"
        assert topology.results_exchange == "test-1a2b.results"

    def test_the_work_queue_is_a_quorum_queue_that_dead_letters_at_least_once(self):
        assert Topology("ns", delivery_limit=3).requests_queue_arguments() == {
            "x-queue-type": "quorum",
            "x-delivery-limit": 3,
            "x-dead-letter-exchange": "ns.dlx",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def test_the_dead_letter_queues_are_quorum_queues_too(self):
        assert Topology("ns").dead_letter_queue_arguments() == {"x-queue-type": "quorum"}


class TestParseEvent:
    def test_an_operation_body_gives_an_operation_result(self):
        event = parse_event(succeeded_result().model_dump_json())
        assert isinstance(event, OperationResult)
        assert event == succeeded_result()

    def test_a_failed_operation_body_gives_an_operation_result_with_its_error(self):
        event = parse_event(failed_result().model_dump_json().encode())
        assert isinstance(event, OperationResult)
        assert event == failed_result()

    def test_a_completion_body_gives_a_batch_completed(self):
        event = parse_event(a_completion().model_dump_json())
        assert isinstance(event, BatchCompleted)
        assert event == a_completion()

    def test_a_rejection_body_gives_a_batch_rejected(self):
        event = parse_event(a_rejection().model_dump_json())
        assert isinstance(event, BatchRejected)
        assert event == a_rejection()

    def test_a_field_added_by_a_later_version_is_ignored(self):
        body = json.loads(a_completion().model_dump_json()) | {"region": "eu-west-1"}
        assert parse_event(json.dumps(body)) == a_completion()

    @pytest.mark.parametrize(
        "body", [b"{}", b'{"event_type": "batchops.other.v1"}', b"not json", b"[]"]
    )
    def test_a_body_that_is_no_event_is_a_validation_error(self, body):
        with pytest.raises(ValidationError):
            parse_event(body)


class TestSchemas:
    @pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
    @pytest.mark.generated
    def test_the_committed_schema_matches_the_models(self, name):
        committed = COMMITTED_SCHEMA_DIR / f"{name}.schema.json"
        assert committed.exists(), f"{committed} is missing: run `batchops schema`"
        # Compared as JSON: pydantic releases within our floor spell 0 and 0.0 differently.
        assert json.loads(committed.read_text(encoding="utf-8")) == json.loads(
            render(json_schemas(data_schemas())[name])
        ), f"{committed.name} is out of date: run `make schema`"

    def test_every_committed_schema_file_belongs_to_a_model(self):
        committed = {p.name for p in COMMITTED_SCHEMA_DIR.glob("*")}
        assert committed == {f"{name}.schema.json" for name in SCHEMA_MODELS} | {
            "asyncapi.json",
            "openapi.json",
        }

    @pytest.mark.parametrize("name", ["batch_completed", "batch_rejected", "batch_request"])
    def test_a_schema_lists_the_fields_of_its_model(self, name):
        schema = json_schemas(data_schemas())[name]
        assert set(schema["properties"]) == set(SCHEMA_MODELS[name].model_fields)

    def test_the_operation_result_schema_lists_its_fields(self):
        schemas = json_schemas(data_schemas())
        for schema in (
            schemas["operation_result"],
            schemas["batch_completed"]["$defs"]["OperationResult"],
        ):
            assert {"event_id", "index", "outcome", "data", "error"} <= set(
                schema.get("properties", {})
            ), f"the operation result schema describes no fields: {schema}"


def ruff_isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 enforces: CONSTANTS, then Classes, then functions."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


class TestPublicSurface:
    @pytest.mark.parametrize("module", [contracts, publisher], ids=lambda m: m.__name__)
    def test_all_is_sorted(self, module):
        assert module.__all__ == sorted(module.__all__, key=ruff_isort_key)

    @pytest.mark.parametrize("module", [contracts, publisher], ids=lambda m: m.__name__)
    def test_every_name_in_all_exists(self, module):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []

    @pytest.mark.parametrize("module", [contracts, publisher], ids=lambda m: m.__name__)
    def test_all_has_no_duplicates(self, module):
        assert len(set(module.__all__)) == len(module.__all__)


# -- property: whatever a producer may validly send survives a JSON round trip -----------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)

operations = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["PATCH", "POST", "DELETE"]),
        "resource_id": st.integers(min_value=1, max_value=MAX_ID),
        "data": st.dictionaries(st.text(), json_values, max_size=5),
    }
)


@st.composite
def batch_requests(draw: st.DrawFn) -> BatchRequest:
    operation_type = draw(st.sampled_from(list(OperationType)))
    body: dict[str, Any] = {
        "batch_id": str(draw(st.uuids())),
        "operation_type": operation_type.value,
        "actor_id": draw(st.integers(min_value=1, max_value=MAX_ID)),
        "operations": draw(st.lists(operations, min_size=1, max_size=50)),
    }
    if operation_type is OperationType.CUSTOM:
        body["handler"] = draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,100}", fullmatch=True))
    mode = draw(st.sampled_from([None, *Mode]))
    if mode is not None:
        body["mode"] = mode.value
    return BatchRequest.model_validate_json(json.dumps(body))


@given(batch_requests())
def test_any_valid_request_survives_a_json_round_trip_unchanged(batch: BatchRequest) -> None:
    assert BatchRequest.model_validate_json(batch.model_dump_json()) == batch
