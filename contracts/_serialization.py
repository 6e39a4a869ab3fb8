"""Models whose serializer leaves out optional fields that say nothing (a `data` of a failure,
a `retry_of` of a batch that is no retry), so that what is absent is absent, never null."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


class LeavesOutSilentFields(BaseModel):
    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Described by its fields in both modes: the serializer only leaves some out, and a
        # serializer's own schema would describe nothing (any value).
        if handler.mode == "serialization":
            core_schema = {
                key: value for key, value in core_schema.items() if key != "serialization"
            }
        return handler(core_schema)


def leave_out(
    dumped: Any,
    model: BaseModel,
    *,
    absent: tuple[str, ...] = (),
    unless_true: tuple[str, ...] = (),
) -> Any:
    """`dumped` without the fields of `absent` that are None and those of `unless_true` that
    are false (a serializer rather than Field(exclude_if=...), which older pydantic releases
    do not have)."""
    if isinstance(dumped, dict):
        for name in absent:
            if getattr(model, name) is None:
                dumped.pop(name, None)
        for name in unless_true:
            if not getattr(model, name):
                dumped.pop(name, None)
    return dumped
