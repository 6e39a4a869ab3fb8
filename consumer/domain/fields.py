"""Field types and the base model shared by the per-operation data models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it as bad data (400), not a crash (500).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Text = Annotated[StrictStr, AfterValidator(_no_nul)]
Money = Annotated[Decimal, Field(ge=0, le=1_000_000, max_digits=9, decimal_places=2)]


class Changes(BaseModel):
    """Base of every operation's `data` model: no unknown fields, at least one field, and an
    explicit null only where a field may be cleared. Checked before any resource is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_allowed(cls, value: object, info: ValidationInfo) -> object:
        # Runs for given values only: an omitted field stays "not given".
        if value is None and info.field_name not in cls.nullable:
            raise PydanticCustomError("null_not_allowed", "may not be null")
        return value

    @model_validator(mode="after")
    def _at_least_one_field(self) -> Self:
        if not self.model_fields_set:
            names = ", ".join(type(self).model_fields)
            raise PydanticCustomError("no_fields", f"at least one of {names} is required")
        return self
