"""The method and `data` model of each built-in operation type, and their JSON Schemas (the
per-type `data` of the committed request schema)."""

from __future__ import annotations

from typing import Any

from consumer.domain.catalog import ApprovalDecision, DeleteTarget, ServiceChanges, UserChanges
from consumer.domain.fields import Changes
from consumer.domain.orders import OrderChanges
from contracts import Method, OperationType

DATA_MODELS: dict[OperationType, tuple[Method, type[Changes]]] = {
    OperationType.ORDER_UPDATE: (Method.PATCH, OrderChanges),
    OperationType.PROFESSIONAL_APPROVAL: (Method.PATCH, ApprovalDecision),
    OperationType.SERVICE_UPDATE: (Method.PATCH, ServiceChanges),
    OperationType.USER_UPDATE: (Method.PATCH, UserChanges),
    OperationType.BULK_DELETE: (Method.DELETE, DeleteTarget),
}


def data_schema(model: type[Changes]) -> dict[str, Any]:
    """`model`'s JSON Schema as the service applies it: null only where a field may be
    cleared, and at least one field."""
    schema = model.model_json_schema(mode="validation")
    for name, field in schema["properties"].items():
        branches = field.get("anyOf")
        if name in model.nullable or not branches:
            continue
        kept = [branch for branch in branches if branch != {"type": "null"}]
        field.pop("anyOf")
        field.pop("default", None)
        field.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    schema["minProperties"] = 1
    return schema


def data_schemas() -> dict[str, dict[str, Any]]:
    """`{operation_type: {"method": ..., "data": schema}}` for `contracts.schema.json_schemas`."""
    return {
        kind.value: {"method": method.value, "data": data_schema(model)}
        for kind, (method, model) in DATA_MODELS.items()
    }
