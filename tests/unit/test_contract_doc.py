"""Every JSON example of docs/contract.md is valid against the committed schemas (broker
messages) or the HTTP API's models, and the examples cover every message."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from pydantic import BaseModel

from consumer.config import Settings
from consumer.entrypoints.http import schemas as http_schemas
from contracts.schema import COMMITTED_SCHEMA_DIR, SCHEMA_MODELS

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
# A JSON block says what it is in the comment line just above it.
EXAMPLE = re.compile(r"<!-- (schema|model|setting): (\w+) -->\n```json\n(.*?)\n```", re.DOTALL)


def examples() -> list[tuple[str, str, Any]]:
    text = CONTRACT.read_text(encoding="utf-8")
    return [(kind, name, json.loads(body)) for kind, name, body in EXAMPLE.findall(text)]


def committed_schema(name: str) -> dict[str, Any]:
    path = COMMITTED_SCHEMA_DIR / f"{name}.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def test_every_json_block_of_the_contract_says_what_it_is() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    assert text.count("```json") == len(examples()), "a ```json block without its marker"


def test_every_message_of_the_broker_has_an_example() -> None:
    shown = {name for kind, name, _ in examples() if kind == "schema"}
    assert shown == set(SCHEMA_MODELS)


@pytest.mark.parametrize(
    ("kind", "name", "example"),
    examples(),
    ids=[f"{i}-{name}" for i, (_, name, _) in enumerate(examples())],
)
def test_the_example_is_valid(kind: str, name: str, example: Any) -> None:
    if kind == "schema":
        errors = [
            e.message
            for e in jsonschema_rs.validator_for(committed_schema(name)).iter_errors(example)
        ]
        assert errors == [], f"{name} example: {errors}"
        SCHEMA_MODELS[name].model_validate(example)
    elif kind == "setting":
        # The value of BATCHOPS_<NAME>, as the environment would give it.
        settings = Settings.model_validate({name: json.dumps(example)})
        assert getattr(settings, name), f"BATCHOPS_{name.upper()} example read as nothing"
    else:
        model = getattr(http_schemas, name)
        assert issubclass(model, BaseModel)
        model.model_validate(example)


class TestTheSchemasRefuseWhatTheServiceRefuses:
    """The schemas are strict where the contract is: these must fail validation."""

    @staticmethod
    def refused(name: str, instance: Any) -> bool:
        return not jsonschema_rs.validator_for(committed_schema(name)).is_valid(instance)

    @staticmethod
    def example(name: str) -> dict[str, Any]:
        found = next(ex for kind, n, ex in examples() if kind == "schema" and n == name)
        return dict(found)

    def test_custom_without_a_handler(self) -> None:
        request = self.example("batch_request") | {"operation_type": "custom"}
        assert self.refused("batch_request", request)

    def test_a_handler_on_another_type(self) -> None:
        request = self.example("batch_request") | {"handler": "append_order_note"}
        assert self.refused("batch_request", request)

    def test_data_of_another_operation_type(self) -> None:
        request = self.example("batch_request")
        request["operations"] = [{"method": "PATCH", "resource_id": 1, "data": {"approved": True}}]
        assert self.refused("batch_request", request)

    def test_a_failure_with_data_null(self) -> None:
        failure = next(
            ex for kind, n, ex in examples() if n == "operation_result" and not ex["success"]
        )
        assert self.refused("operation_result", failure | {"data": None})

    def test_a_success_with_an_error(self) -> None:
        success = self.example("operation_result")
        error = {"code": "CONFLICT", "message": "x", "type": "ConflictError"}
        assert self.refused("operation_result", success | {"error": error})

    def test_an_error_type_that_is_not_its_code_s(self) -> None:
        failure = next(
            ex for kind, n, ex in examples() if n == "operation_result" and not ex["success"]
        )
        error = failure["error"] | {"type": "KeyError"}
        assert self.refused("operation_result", failure | {"error": error})

    def test_a_success_rate_over_100(self) -> None:
        assert self.refused(
            "batch_completed", self.example("batch_completed") | {"success_rate": 250}
        )

    def test_a_rejection_without_errors(self) -> None:
        assert self.refused("batch_rejected", self.example("batch_rejected") | {"errors": []})
