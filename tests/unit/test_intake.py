"""Intake (consumer/service_layer/intake.py): which deliveries are batches, and why
(docs/contract.md, "Batch request")."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.service_layer.intake import (
    Delivery,
    IntakePolicy,
    Rejection,
    accept,
    conflict,
    field_of,
    fingerprint,
)
from contracts import MAX_BODY_BYTES, MAX_OPERATIONS, BatchRequest, ErrorCode

BATCH_ID = "3d0f5c2e-6b8e-4f5e-9d63-2a4c7e1b9f10"


def a_policy(**overrides: Any) -> IntakePolicy:
    settings: dict[str, Any] = {
        "max_body_bytes": MAX_BODY_BYTES,
        "max_operations": MAX_OPERATIONS,
        "allowed_publishers": frozenset(),
        "operation_types": frozenset({"order_update", "custom"}),
        "custom_handlers": frozenset({"acme.reindex"}),
    }
    settings.update(overrides)
    return IntakePolicy(**settings)


def a_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch_id": BATCH_ID,
        "operation_type": "order_update",
        "actor_id": 1,
        "operations": [
            {"method": "PATCH", "resource_id": 1, "data": {"status": "accepted"}},
            {"method": "PATCH", "resource_id": 2, "data": {"price": "1.50", "notes": "n"}},
        ],
    }
    body.update(overrides)
    return body


def deliver(
    body: dict[str, Any] | bytes, user_id: str | None = "producer", message_id: str | None = None
) -> Delivery:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Delivery(body=raw, user_id=user_id, message_id=message_id, correlation_id="corr-1")


def rejected(delivery: Delivery, policy: IntakePolicy | None = None) -> Rejection:
    verdict = accept(delivery, policy or a_policy())
    assert isinstance(verdict, Rejection), (
        f"expected a rejection, the request was accepted: {verdict}"
    )
    return verdict


def accepted(delivery: Delivery, policy: IntakePolicy | None = None) -> BatchRequest:
    verdict = accept(delivery, policy or a_policy())
    assert isinstance(verdict, BatchRequest), f"expected acceptance, got {verdict}"
    return verdict


def kinds(rejection: Rejection) -> list[str]:
    return [reason.type for reason in rejection.errors]


def padded_to(size: int) -> bytes:
    """A valid request whose JSON is padded with insignificant whitespace to `size` bytes."""
    raw = json.dumps(a_body()).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


class TestAccepts:
    def test_a_valid_request_is_returned_validated(self):
        request = accepted(deliver(a_body()))
        assert request.batch_id == UUID(BATCH_ID)
        assert len(request.operations) == 2

    def test_a_body_of_exactly_the_limit_is_accepted(self):
        assert accepted(deliver(padded_to(MAX_BODY_BYTES))).batch_id == UUID(BATCH_ID)

    def test_a_publisher_on_the_allow_list_is_accepted(self):
        policy = a_policy(allowed_publishers=frozenset({"billing", "producer"}))
        accepted(deliver(a_body(), user_id="producer"), policy)

    def test_a_registered_custom_handler_is_accepted(self):
        body = a_body(operation_type="custom", handler="acme.reindex")
        assert accepted(deliver(body)).handler == "acme.reindex"


class TestRejects:
    def test_a_body_over_the_limit_is_refused_and_keeps_the_batch_its_head_names(self):
        rejection = rejected(deliver(padded_to(MAX_BODY_BYTES + 1)))
        assert kinds(rejection) == ["body_too_large"]
        assert rejection.code is ErrorCode.VALIDATION_ERROR
        assert (rejection.batch_id, rejection.operation_type) == (UUID(BATCH_ID), "order_update")
        assert rejection.actor_id == 1
        assert rejection.recordable

    def test_a_body_over_the_limit_whose_head_names_nothing_stays_anonymous(self):
        body = b'{"operations": [' + b" " * (MAX_BODY_BYTES + 1) + b"]}"
        rejection = rejected(deliver(body))
        assert (rejection.batch_id, rejection.operation_type) == (None, "unknown")
        assert not rejection.recordable

    def test_a_cut_short_body_keeps_the_fields_complete_in_its_first_4_kib(self):
        whole = json.dumps(a_body(notes="x" * 5000)).encode()
        rejection = rejected(deliver(whole[:4500]))
        assert (rejection.batch_id, rejection.operation_type) == (UUID(BATCH_ID), "order_update")

    def test_a_field_nested_in_an_operation_is_not_taken_for_the_batch_s(self):
        body = (
            b'{"operations": [{"data": {"batch_id": "' + BATCH_ID.encode() + b'", '
            b'"operation_type": "custom"}}], "broken'
        )
        rejection = rejected(deliver(body))
        assert (rejection.batch_id, rejection.operation_type) == (None, "unknown")

    def test_a_lower_configured_body_limit_applies(self):
        rejection = rejected(deliver(padded_to(2048)), a_policy(max_body_bytes=2047))
        assert kinds(rejection) == ["body_too_large"]

    @pytest.mark.parametrize("user_id", [None, ""], ids=["absent", "empty"])
    def test_a_message_without_user_id_is_refused(self, user_id):
        rejection = rejected(deliver(a_body(), user_id=user_id))
        assert kinds(rejection) == ["user_id_missing"]
        assert rejection.errors[0].loc == ["user_id"]
        assert rejection.batch_id == UUID(BATCH_ID), "the batch id should be peeked from the body"
        assert rejection.operation_type == "order_update"

    def test_a_publisher_not_on_the_allow_list_is_refused(self):
        policy = a_policy(allowed_publishers=frozenset({"billing"}))
        rejection = rejected(deliver(a_body(), user_id="intruder"), policy)
        assert kinds(rejection) == ["publisher_not_allowed"]
        assert "intruder" in rejection.errors[0].msg
        assert rejection.batch_id == UUID(BATCH_ID)

    @pytest.mark.parametrize("body", [b"not json", b"{", b"\xff\xfe", b""])
    def test_a_body_that_is_not_json_is_refused_with_an_unknown_type(self, body):
        rejection = rejected(deliver(body))
        assert rejection.code is ErrorCode.VALIDATION_ERROR
        assert (rejection.batch_id, rejection.operation_type) == (None, "unknown")
        assert kinds(rejection), "the rejection must say why"

    def test_a_json_body_that_is_not_an_object_is_refused_with_an_unknown_type(self):
        rejection = rejected(deliver(b'[{"batch_id": "x"}]'))
        assert (rejection.batch_id, rejection.operation_type) == (None, "unknown")

    def test_an_unknown_operation_type_is_refused_and_routed_as_unknown(self):
        rejection = rejected(deliver(a_body(operation_type="order_delete")))
        assert rejection.operation_type == "unknown"
        assert rejection.batch_id == UUID(BATCH_ID)
        assert [reason.loc for reason in rejection.errors] == [["operation_type"]]

    def test_a_known_type_this_service_does_not_handle_is_refused_under_its_real_type(self):
        rejection = rejected(deliver(a_body(operation_type="user_update")))
        assert kinds(rejection) == ["unsupported_operation_type"]
        assert rejection.operation_type == "user_update"

    def test_more_operations_than_the_configured_max_are_refused(self):
        rejection = rejected(deliver(a_body()), a_policy(max_operations=1))
        assert kinds(rejection) == ["too_many_operations"]
        assert rejection.errors[0].loc == ["operations"]
        assert (rejection.batch_id, rejection.operation_type) == (UUID(BATCH_ID), "order_update")

    def test_more_operations_than_the_contract_allows_are_refused(self):
        operations = [{"method": "PATCH", "resource_id": i, "data": {}} for i in range(1, 52)]
        rejection = rejected(deliver(a_body(operations=operations)))
        assert ["operations"] in [reason.loc for reason in rejection.errors]
        assert rejection.operation_type == "order_update"

    def test_an_unknown_custom_handler_is_refused_under_type_custom(self):
        rejection = rejected(deliver(a_body(operation_type="custom", handler="acme.nope")))
        assert kinds(rejection) == ["unknown_handler"]
        assert rejection.errors[0].loc == ["handler"]
        assert (rejection.batch_id, rejection.operation_type) == (UUID(BATCH_ID), "custom")

    def test_an_invalid_field_is_reported_with_its_location(self):
        body = a_body(actor_id="1")
        rejection = rejected(deliver(body))
        assert [reason.loc for reason in rejection.errors] == [["actor_id"]]
        assert rejection.operation_type == "order_update"

    def test_an_invalid_batch_id_is_not_peeked(self):
        rejection = rejected(deliver(a_body(batch_id="not-a-uuid")))
        assert rejection.batch_id is None
        assert rejection.operation_type == "order_update"

    def test_every_problem_found_after_parsing_is_reported_at_once(self):
        body = a_body(operation_type="custom", handler="acme.nope")
        rejection = rejected(deliver(body), a_policy(max_operations=1))
        assert sorted(kinds(rejection)) == ["too_many_operations", "unknown_handler"]


class TestRejectionEventId:
    def test_a_redelivered_copy_of_a_refused_message_has_the_same_event_id(self):
        body = a_body(actor_id=0)
        assert (
            rejected(deliver(body, message_id="m1")).event_id
            == rejected(deliver(body, message_id="m1")).event_id
        )

    def test_different_refused_bodies_have_different_event_ids(self):
        one = rejected(deliver(a_body(actor_id=0)))
        other = rejected(deliver(a_body(actor_id=-1)))
        assert one.event_id != other.event_id

    def test_the_same_bytes_under_another_message_id_get_another_event_id(self):
        assert (
            rejected(deliver(b"not json", message_id="m1")).event_id
            != rejected(deliver(b"not json", message_id="m2")).event_id
        )


class TestFingerprint:
    def test_the_same_request_spelled_with_another_key_order_has_the_same_fingerprint(self):
        body = a_body()
        reordered = {key: body[key] for key in reversed(list(body))}
        reordered["operations"] = [
            {"data": dict(reversed(list(op["data"].items()))), "resource_id": op["resource_id"]}
            | {"method": op["method"]}
            for op in body["operations"]
        ]
        assert json.dumps(reordered) != json.dumps(body), "the two spellings must differ"
        assert fingerprint(accepted(deliver(reordered))) == fingerprint(accepted(deliver(body)))

    def test_whitespace_does_not_change_the_fingerprint(self):
        compact = json.dumps(a_body(), separators=(",", ":")).encode()
        spaced = json.dumps(a_body(), indent=4).encode()
        assert fingerprint(accepted(deliver(compact))) == fingerprint(accepted(deliver(spaced)))

    def test_an_omitted_default_mode_has_the_fingerprint_of_an_explicit_continue(self):
        explicit = accepted(deliver(a_body(mode="continue")))
        assert fingerprint(accepted(deliver(a_body()))) == fingerprint(explicit)

    @pytest.mark.parametrize(
        "change",
        [
            {"actor_id": 2},
            {"mode": "atomic"},
            {"operations": [{"method": "PATCH", "resource_id": 1, "data": {"status": "accepted"}}]},
            {
                "operations": [
                    {"method": "PATCH", "resource_id": 1, "data": {"status": "accepted"}},
                    {"method": "PATCH", "resource_id": 2, "data": {"price": "2.50", "notes": "n"}},
                ]
            },
        ],
        ids=["actor", "mode", "fewer operations", "another price"],
    )
    def test_a_different_body_has_a_different_fingerprint(self, change):
        original = fingerprint(accepted(deliver(a_body())))
        assert fingerprint(accepted(deliver(a_body(**change)))) != original

    def test_the_order_of_operations_is_part_of_the_fingerprint(self):
        body = a_body()
        swapped = a_body(operations=list(reversed(body["operations"])))
        assert fingerprint(accepted(deliver(swapped))) != fingerprint(accepted(deliver(body)))


class TestConflict:
    def test_a_re_used_batch_id_is_refused_with_code_conflict(self):
        delivery = deliver(a_body())
        rejection = conflict(delivery, accepted(delivery))
        assert rejection.code is ErrorCode.CONFLICT
        assert rejection.code.status == 409
        assert (rejection.batch_id, rejection.operation_type) == (UUID(BATCH_ID), "order_update")
        assert kinds(rejection) == ["batch_id_conflict"]
        assert rejection.errors[0].loc == ["batch_id"]

    def test_a_conflict_has_an_event_id_of_its_own_message(self):
        first, second = deliver(a_body()), deliver(a_body(actor_id=2))
        assert (
            conflict(first, accepted(first)).event_id != conflict(second, accepted(second)).event_id
        )

    def test_a_conflict_is_never_recorded_as_a_batch(self):
        delivery = deliver(a_body())
        assert not conflict(delivery, accepted(delivery)).recordable


@given(st.binary(max_size=512))
def test_any_bytes_are_accepted_or_refused_without_raising(body: bytes) -> None:
    verdict = accept(Delivery(body=body, user_id="producer"), a_policy())
    assert isinstance(verdict, Rejection | BatchRequest)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)


@given(
    st.dictionaries(
        st.sampled_from(["batch_id", "operation_type", "actor_id", "operations", "mode", "x"]),
        json_scalars
        | st.lists(json_scalars, max_size=3)
        | st.dictionaries(st.text(), json_scalars),
    )
)
def test_any_json_object_is_accepted_or_refused_without_raising(body: dict[str, Any]) -> None:
    verdict = accept(Delivery(body=json.dumps(body).encode(), user_id="producer"), a_policy())
    assert isinstance(verdict, Rejection | BatchRequest)
    if isinstance(verdict, Rejection):
        assert verdict.operation_type in {"unknown", "order_update", "custom", *_TYPES}


_TYPES = {"professional_approval", "service_update", "user_update", "bulk_delete"}


class TestFieldOf:
    def test_a_leading_field_is_read_without_decoding_the_rest(self) -> None:
        # The tail is not JSON at all: only a reader that stops at the field gets it.
        body = b'{"event_id": "e", "batch_id": "b", "results": [{"cut short'
        assert field_of(body, "batch_id") == "b"

    def test_a_field_beyond_the_first_bytes_is_read_from_the_whole_body(self) -> None:
        body = json.dumps({"results": ["x" * 5000], "batch_id": "late"}).encode()
        assert field_of(body, "batch_id") == "late"

    @pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"other": 1}'])
    def test_a_body_without_it_gives_none(self, body: bytes) -> None:
        assert field_of(body, "batch_id") is None
