"""Which marketplace actors a broker user may publish batches for (docs/contract.md,
"Publisher grants"): by id, by role, or every one."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.domain.model import Actor, Role


@dataclass(frozen=True, slots=True)
class Grant:
    actors: frozenset[int] = frozenset()
    roles: frozenset[Role] = frozenset()
    everyone: bool = False

    def covers_id(self, actor_id: int) -> bool:
        """Decided without reading the actor: everyone, or this id by name."""
        return self.everyone or actor_id in self.actors

    def covers(self, actor: Actor | None) -> bool:
        """By role; an actor that does not exist has no role, so no role grant covers it."""
        return actor is not None and (self.covers_id(actor.id) or actor.role in self.roles)


EVERYONE = Grant(everyone=True)
# A broker user the setting does not name may act for nobody.
NOTHING = Grant()
