"""JSON Schema of every message and event, as committed in `contracts/schemas/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts.events import BatchCompleted, BatchRejected, OperationResult
from contracts.requests import BatchRequest

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "batch_completed": BatchCompleted,
    "batch_rejected": BatchRejected,
    "batch_request": BatchRequest,
    "operation_result": OperationResult,
}

COMMITTED_SCHEMA_DIR = Path(__file__).parent / "schemas"


def json_schemas() -> dict[str, dict[str, Any]]:
    """Schema per file stem; request schemas describe input, event schemas output."""
    return {
        name: model.model_json_schema(
            mode="validation" if name == "batch_request" else "serialization"
        )
        for name, model in SCHEMA_MODELS.items()
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write `<name>.schema.json` files into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
