"""The README's "Who may do what" table, row by row: one operation per row through the operation
handlers on the in-memory unit of work, its status and whether its change was made.

Each type's own rules are in test_order_rules.py, test_catalog_rules.py and test_handlers.py;
tests/integration/test_operation_types.py runs each type end to end on the real services."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.domain.errors import OperationFailed, PermissionDenied
from consumer.domain.model import Actor, ResourceKind
from consumer.service_layer.handlers import HANDLERS, OperationContext
from contracts import Method, Operation
from tests.unit.fakes import FakeDatabase, FakeUnitOfWork, demo_marketplace

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

# The demo marketplace (docs/contract.md, Demo data): order i has client 3 + i % 3 and
# professional 1 + i % 3, whose user is 6 + i % 3; services 2k-1 and 2k belong to
# professional k (user 5 + k).
ADMIN, STAFF, CLIENT, PROFESSIONAL = 1, 2, 3, 6
INACTIVE = 5  # a client, deactivated here
UNKNOWN = 999
OWN, OTHER = "own", "other"

# Resources are chosen so that no two rows that may succeed touch the same one. `own` means the
# actor is the order's client or professional, the service's professional, the professional
# profile's user, or the user.
PERMISSIONS: list[tuple[int, str, str, str, int, int]] = [
    # actor, role, operation type, own/other, resource id, expected status
    # order_update (PATCH {"notes"}): admin/staff, or a party of the order
    (ADMIN, "admin", "order_update", OTHER, 4, 200),
    (STAFF, "staff", "order_update", OTHER, 7, 200),
    (CLIENT, "client", "order_update", OWN, 3, 200),
    (CLIENT, "client", "order_update", OTHER, 1, 403),
    (PROFESSIONAL, "professional", "order_update", OWN, 6, 200),
    (PROFESSIONAL, "professional", "order_update", OTHER, 10, 403),
    (INACTIVE, "inactive client", "order_update", OWN, 2, 403),
    (INACTIVE, "inactive client", "order_update", OTHER, 13, 403),
    (UNKNOWN, "unknown", "order_update", OTHER, 16, 403),
    # professional_approval (PATCH {"approved", "reason"} on a professional id): admin/staff only
    (ADMIN, "admin", "professional_approval", OTHER, 2, 200),
    (STAFF, "staff", "professional_approval", OTHER, 3, 200),
    (CLIENT, "client", "professional_approval", OTHER, 2, 403),
    (PROFESSIONAL, "professional", "professional_approval", OWN, 1, 403),
    (PROFESSIONAL, "professional", "professional_approval", OTHER, 2, 403),
    (INACTIVE, "inactive client", "professional_approval", OTHER, 3, 403),
    (UNKNOWN, "unknown", "professional_approval", OTHER, 3, 403),
    # service_update (PATCH {"description"}): the service's professional, or admin/staff
    (ADMIN, "admin", "service_update", OTHER, 3, 200),
    (STAFF, "staff", "service_update", OTHER, 5, 200),
    (CLIENT, "client", "service_update", OTHER, 2, 403),
    (PROFESSIONAL, "professional", "service_update", OWN, 1, 200),
    (PROFESSIONAL, "professional", "service_update", OTHER, 4, 403),
    (INACTIVE, "inactive client", "service_update", OTHER, 6, 403),
    (UNKNOWN, "unknown", "service_update", OTHER, 6, 403),
    # user_update (PATCH {"name"}): one's own name/email/phone; admin/staff anybody's
    (ADMIN, "admin", "user_update", OWN, 1, 200),
    (ADMIN, "admin", "user_update", OTHER, 4, 200),
    (STAFF, "staff", "user_update", OWN, 2, 200),
    (STAFF, "staff", "user_update", OTHER, 8, 200),
    (CLIENT, "client", "user_update", OWN, 3, 200),
    (CLIENT, "client", "user_update", OTHER, 4, 403),
    (PROFESSIONAL, "professional", "user_update", OWN, 6, 200),
    (PROFESSIONAL, "professional", "user_update", OTHER, 7, 403),
    (INACTIVE, "inactive client", "user_update", OWN, 5, 403),
    (INACTIVE, "inactive client", "user_update", OTHER, 4, 403),
    (UNKNOWN, "unknown", "user_update", OTHER, 4, 403),
    # bulk_delete (DELETE {"resource": "order"}): admin only
    (ADMIN, "admin", "bulk_delete", OTHER, 30, 200),
    (STAFF, "staff", "bulk_delete", OTHER, 27, 403),
    (CLIENT, "client", "bulk_delete", OWN, 24, 403),
    (PROFESSIONAL, "professional", "bulk_delete", OWN, 21, 403),
    (INACTIVE, "inactive client", "bulk_delete", OWN, 29, 403),
    (UNKNOWN, "unknown", "bulk_delete", OTHER, 28, 403),
]
MARKER = "written by the permission matrix"


def row_id(entry: tuple[int, str, str, str, int, int]) -> str:
    _, role, kind, own, resource, expected = entry
    return f"{role}-{kind}-{own}-{resource}-{expected}"


# What each row asks: the marker lands in the notes, the reason, the description or the name.
DATA: dict[str, dict[str, Any]] = {
    "order_update": {"notes": MARKER},
    "professional_approval": {"approved": True, "reason": MARKER},
    "service_update": {"description": MARKER},
    "user_update": {"name": MARKER},
    "bulk_delete": {"resource": "order"},
}


def operation_for(kind: str, resource_id: int) -> Operation:
    method = Method.DELETE if kind == "bulk_delete" else Method.PATCH
    return Operation(method=method, resource_id=resource_id, data=DATA[kind])


def applied(db: FakeDatabase, kind: str, resource_id: int) -> bool:
    """Whether the row's change is in the committed state."""
    if kind == "order_update":
        return db.orders[resource_id].notes == MARKER
    if kind == "professional_approval":
        return db.professionals[resource_id].approval_reason == MARKER
    if kind == "service_update":
        return db.services[resource_id].description == MARKER
    if kind == "user_update":
        return db.users[resource_id].name == MARKER
    return (ResourceKind.ORDER, resource_id) in db.deleted


@pytest.fixture
def db() -> FakeDatabase:
    """The demo marketplace with 30 orders, as `batchops seed` makes it, client 5 deactivated."""
    db = demo_marketplace(order_count=30)
    db.actors[INACTIVE] = replace(db.actors[INACTIVE], is_active=False)
    db.users[INACTIVE] = replace(db.users[INACTIVE], is_active=False)
    return db


@pytest.mark.parametrize("entry", PERMISSIONS, ids=[row_id(e) for e in PERMISSIONS])
async def test_every_role_gets_the_status_the_table_gives_on_its_own_and_others_resources(
    db: FakeDatabase, entry: tuple[int, str, str, str, int, int]
) -> None:
    actor_id, _, kind, _, resource_id, expected = entry
    operation = operation_for(kind, resource_id)

    status, failure = 200, None
    try:
        async with FakeUnitOfWork(db) as uow:
            actor: Actor | None = await uow.marketplace.get_actor(actor_id)
            await HANDLERS[kind](OperationContext(uow, actor_id, actor, NOW), operation)
            await uow.commit()
    except OperationFailed as exc:
        status, failure = exc.code.status, exc

    assert status == expected, f"{entry}: {failure!r}"
    if expected != 200:
        assert isinstance(failure, PermissionDenied), f"{entry}: {failure!r}"
    assert applied(db, kind, resource_id) is (expected == 200), f"{entry}: the change"
