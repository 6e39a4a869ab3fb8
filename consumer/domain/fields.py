"""Field types shared by the per-operation data models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field, StrictStr


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it as bad data (400), not a crash (500).
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Text = Annotated[StrictStr, AfterValidator(_no_nul)]
Money = Annotated[Decimal, Field(ge=0, le=1_000_000, max_digits=9, decimal_places=2)]
