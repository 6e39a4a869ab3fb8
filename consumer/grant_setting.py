"""`BATCHOPS_PUBLISHER_GRANTS` read into grants, with errors an operator can act on."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.domain.grants import EVERYONE, Grant
from consumer.domain.model import Role
from contracts.requests import MAX_ID

EXAMPLE = (
    '{"partner-svc": {"actors": [3, 4]}, "backoffice": {"roles": ["admin", "staff"]}, "ops": "*"}'
)
_FORM = (
    'a JSON object mapping a broker user to "*" or {"actors": [ids], "roles": [roles]}, '
    f"e.g. {EXAMPLE}"
)


class _Listed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actors: list[Annotated[int, Field(strict=True, gt=0, le=MAX_ID)]] = []
    roles: list[Role] = []


def parse_grants(value: object) -> dict[str, Grant] | None:
    """The grants by broker user; None when the setting is unset or empty (nobody is limited).
    Raises ValueError saying what is wrong and where."""
    if value is None or value == "":
        return None
    raw = value
    if isinstance(value, str | bytes):
        try:
            raw = json.loads(value)
        except json.JSONDecodeError as exc:
            problem = f"not JSON ({exc.msg} at character {exc.pos})"
            raise ValueError(f"{problem}; write {_FORM}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"must be {_FORM}")
    return {_user(user): _grant(user, entry) for user, entry in raw.items()}


def _user(user: str) -> str:
    if not user.strip():
        raise ValueError("a broker user's name is empty")
    return user


def _grant(user: str, entry: object) -> Grant:
    if entry == "*":
        return EVERYONE
    if not isinstance(entry, dict):
        raise ValueError(f'broker user {user!r}: a grant is "*" or an object, not {entry!r}')
    try:
        listed = _Listed.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ValueError(
            f"broker user {user!r}: {where}: {error['msg']} (got {error['input']!r})"
        ) from None
    if not listed.actors and not listed.roles:
        raise ValueError(
            f"broker user {user!r} is granted no actor and no role (leave it out to grant it "
            'nothing, or give "*")'
        )
    return Grant(actors=frozenset(listed.actors), roles=frozenset(listed.roles))
