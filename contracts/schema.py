"""JSON Schema of every message and event, as committed in `contracts/schemas/`.

pydantic gives the fields; the rules between fields that a model checks in code (`handler`
only with `custom`, `data` on success and `error` on failure, the `type` of each code) are
added here as `if`/`then` clauses, so that a schema accepts what the service accepts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.errors import ErrorCode
from contracts.events import BatchCompleted, BatchRejected, OperationResult, Outcome
from contracts.requests import BatchRequest, OperationType
from contracts.topology import UNKNOWN_OPERATION_TYPE

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "batch_completed": BatchCompleted,
    "batch_rejected": BatchRejected,
    "batch_request": BatchRequest,
    "operation_result": OperationResult,
}
COMMITTED_SCHEMA_DIR = Path(__file__).parent / "schemas"
# Fields an event always carries (pydantic lists fields with a default as optional).
_ALWAYS_PRESENT = {
    "operation_result": ["event_type", "correlation_id"],
    "batch_completed": ["event_type", "correlation_id"],
    "batch_rejected": ["event_type", "correlation_id", "status"],
}


def schema_id(name: str) -> str:
    """The `$id` of a committed schema: a name, not a location to fetch."""
    return f"urn:batchops:schema:{name}:v1"


def json_schemas(
    data_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Schema per file stem. `data_schemas` maps an operation type to the method and `data`
    its operations take (`{"method": ..., "data": {...}}`, from the service's own models);
    without it, a request's `data` is any object."""
    schemas = {}
    for name, model in SCHEMA_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["required"] = sorted({*schema.get("required", []), *_ALWAYS_PRESENT.get(name, [])})
        schemas[name] = {"$schema": SCHEMA_DIALECT, "$id": schema_id(name), **schema}
    _request_rules(schemas["batch_request"], data_schemas or {})
    _result_rules(schemas["operation_result"])
    _rejection_rules(schemas["batch_rejected"])
    # A completion's results are operation results, to the letter.
    result = {k: v for k, v in schemas["operation_result"].items() if not k.startswith("$")}
    schemas["batch_completed"]["$defs"]["OperationResult"] = copy.deepcopy(result)
    return schemas


def _when(field: str, value: object, then: dict[str, Any], otherwise: Any = None) -> Any:
    rule = {"if": {"properties": {field: {"const": value}}, "required": [field]}, "then": then}
    return rule | ({"else": otherwise} if otherwise is not None else {})


def _request_rules(schema: dict[str, Any], data_schemas: Mapping[str, Mapping[str, Any]]) -> None:
    custom = OperationType.CUSTOM.value
    handler = schema["properties"]["handler"]
    named = next(branch for branch in handler["anyOf"] if branch.get("type") == "string")
    rules = [
        _when(
            "operation_type",
            custom,
            {"required": ["handler"], "properties": {"handler": named}},
            {"properties": {"handler": {"type": "null"}}},
        )
    ]
    definitions = schema.setdefault("$defs", {})
    for operation_type, shape in sorted(data_schemas.items()):
        data = copy.deepcopy(dict(shape["data"]))
        definitions.update(data.pop("$defs", {}))
        title = data["title"]
        definitions[title] = data
        operation = {
            "properties": {
                "method": {"const": shape["method"]},
                "data": {"$ref": f"#/$defs/{title}"},
            }
        }
        rules.append(
            _when(
                "operation_type",
                operation_type,
                {"properties": {"operations": {"items": operation}}},
            )
        )
    schema["allOf"] = rules


def _result_rules(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    properties["data"] = {
        "type": "object",
        "description": properties["data"]["description"],
        "required": ["id"],
    }
    properties["error"] = {"$ref": "#/$defs/OperationError"}
    succeeded = {
        "required": ["data"],
        "not": {"required": ["error"]},
        "properties": {"outcome": {"const": Outcome.SUCCEEDED.value}, "status": {"const": 200}},
    }
    not_succeeded = {
        "required": ["error"],
        "not": {"required": ["data"]},
        "properties": {"outcome": {"enum": [Outcome.FAILED.value, Outcome.SKIPPED.value]}},
    }
    rules = [_when("success", True, succeeded, not_succeeded)]
    for code in ErrorCode:
        outcome = Outcome.SKIPPED if code is ErrorCode.SKIPPED else Outcome.FAILED
        rules.append(
            {
                "if": {
                    "properties": {"error": {"properties": {"code": {"const": code.value}}}},
                    "required": ["error"],
                },
                "then": {
                    "properties": {
                        "status": {"const": code.status},
                        "outcome": {"const": outcome.value},
                        "error": {"properties": {"type": {"const": code.error_type}}},
                    }
                },
            }
        )
    schema["allOf"] = rules


def _rejection_rules(schema: dict[str, Any]) -> None:
    kinds = [t.value for t in OperationType] + [UNKNOWN_OPERATION_TYPE]
    schema["properties"]["operation_type"]["enum"] = kinds
    schema["properties"]["code"] = {
        "enum": [ErrorCode.VALIDATION_ERROR.value, ErrorCode.CONFLICT.value],
        "description": schema["properties"]["code"]["description"],
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(
    directory: Path, data_schemas: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Path]:
    """Write `<name>.schema.json` files into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas(data_schemas).items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
