"""Operation handlers (consumer/service_layer/handlers.py and the example plugin's
append_order_note, examples/handlers) driven through the in-memory unit of work: the order in
which they check things, and what they change."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from batchops_example_handlers import append_order_note

from consumer.domain.errors import (
    Conflict,
    InvalidData,
    MethodNotAllowed,
    OperationFailed,
    PermissionDenied,
    ResourceNotFound,
)
from consumer.domain.model import Actor, OrderStatus, ResourceKind, Role, User
from consumer.service_layer.handlers import HANDLERS, OperationContext, OperationHandler
from contracts import Method, Operation
from tests.unit.fakes import FakeDatabase, FakeUnitOfWork, demo_marketplace

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ADMIN, STAFF = 1, 2
UNKNOWN = 999
INACTIVE_ADMIN, INACTIVE_CLIENT = 20, 21
MISSING = 9999
# Order 1 of the demo marketplace: client 4, professional 2 (user 7), pending.
ORDER_1_CLIENT, ORDER_1_PROFESSIONAL = 4, 7
OUTSIDER = 5  # a client with no part in order 1, service 1, professional 2 or user 3
# Service 1 belongs to professional 1 (user 6); professional 2 is user 7, awaiting approval.


@dataclass(frozen=True)
class Case:
    """One handler with an operation it accepts and one whose data it refuses."""

    name: str
    handler: OperationHandler
    method: Method
    resource_id: int
    data: dict[str, Any]
    bad_data: dict[str, Any]
    bad_field: str

    def __str__(self) -> str:
        return self.name


CASES = [
    Case(
        "order_update",
        HANDLERS["order_update"],
        Method.PATCH,
        1,
        {"notes": "x"},
        {"notes": 1},
        "notes",
    ),
    Case(
        "professional_approval",
        HANDLERS["professional_approval"],
        Method.PATCH,
        2,
        {"approved": True},
        {"approved": "yes"},
        "approved",
    ),
    Case(
        "service_update",
        HANDLERS["service_update"],
        Method.PATCH,
        1,
        {"name": "Renamed"},
        {"price": "-1"},
        "price",
    ),
    Case(
        "user_update",
        HANDLERS["user_update"],
        Method.PATCH,
        3,
        {"name": "Renamed"},
        {"email": "not-an-email"},
        "email",
    ),
    Case(
        "bulk_delete",
        HANDLERS["bulk_delete"],
        Method.DELETE,
        1,
        {"resource": "order"},
        {"resource": "invoice"},
        "resource",
    ),
    Case(
        "append_order_note", append_order_note, Method.POST, 1, {"text": "hi"}, {"text": ""}, "text"
    ),
]
ORDER_UPDATE, APPROVAL, SERVICE_UPDATE, USER_UPDATE, BULK_DELETE, APPEND_NOTE = CASES
WRONG_METHODS = [(case, method) for case in CASES for method in Method if method is not case.method]
WRONG_METHOD_IDS = [f"{case.name}-{method.value}" for case, method in WRONG_METHODS]
# A free-text field of each operation that takes one.
TEXT_FIELDS = {
    "order_update": "notes",
    "professional_approval": "reason",
    "service_update": "name",
    "user_update": "name",
    "append_order_note": "text",
}


@pytest.fixture
def db() -> FakeDatabase:
    """The demo marketplace plus an inactive admin and an inactive client."""
    db = demo_marketplace()
    for uid, role in ((INACTIVE_ADMIN, Role.ADMIN), (INACTIVE_CLIENT, Role.CLIENT)):
        db.actors[uid] = Actor(uid, role, is_active=False)
        db.users[uid] = User(uid, f"User {uid}", f"user{uid}@example.com", None, role, False)
    return db


async def run(
    db: FakeDatabase,
    handler: OperationHandler,
    actor_id: int,
    method: Method,
    resource_id: int,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Run one operation the way the executor does and commit it; a failure commits nothing."""
    operation = Operation(method=method, resource_id=resource_id, data=data)
    async with FakeUnitOfWork(db) as uow:
        actor = await uow.marketplace.get_actor(actor_id)
        result = await handler(OperationContext(uow, actor_id, actor, NOW), operation)
        await uow.commit()
    return result


async def run_case(
    db: FakeDatabase,
    case: Case,
    actor_id: int = ADMIN,
    *,
    method: Method | None = None,
    resource_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return await run(
        db,
        case.handler,
        actor_id,
        case.method if method is None else method,
        case.resource_id if resource_id is None else resource_id,
        case.data if data is None else data,
    )


async def failure_of(
    db: FakeDatabase,
    case: Case,
    actor_id: int = ADMIN,
    *,
    method: Method | None = None,
    resource_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> OperationFailed:
    commits = db.commits
    with pytest.raises(OperationFailed) as caught:
        await run_case(db, case, actor_id, method=method, resource_id=resource_id, data=data)
    assert db.commits == commits, "a failed operation committed something"
    return caught.value


def marketplace_state(db: FakeDatabase) -> Any:
    return copy.deepcopy((db.orders, db.professionals, db.services, db.users, db.deleted))


def test_every_operation_type_but_custom_has_a_handler_under_test():
    assert set(HANDLERS) == {c.name for c in CASES} - {"append_order_note"}


# -- the order of checks -------------------------------------------------------------------------


class TestUnknownOrInactiveActorIsRefusedFirst:
    @pytest.mark.parametrize("case", CASES, ids=str)
    @pytest.mark.parametrize(
        "actor_id",
        [UNKNOWN, INACTIVE_ADMIN, INACTIVE_CLIENT],
        ids=["unknown", "inactive admin", "inactive client"],
    )
    async def test_even_a_wrong_method_with_bad_data_on_a_missing_resource(
        self, db, case, actor_id
    ):
        wrong = next(m for m in Method if m is not case.method)
        failure = await failure_of(
            db, case, actor_id, method=wrong, resource_id=MISSING, data=case.bad_data
        )
        assert isinstance(failure, PermissionDenied), f"{failure!r} instead of 403"
        assert failure.message == f"actor {actor_id} is unknown or inactive"

    @pytest.mark.parametrize("case", CASES, ids=str)
    @pytest.mark.parametrize(
        "actor_id", [UNKNOWN, INACTIVE_ADMIN], ids=["unknown", "inactive admin"]
    )
    async def test_a_valid_operation_is_refused_and_changes_nothing(self, db, case, actor_id):
        before = marketplace_state(db)
        failure = await failure_of(db, case, actor_id)
        assert isinstance(failure, PermissionDenied)
        assert marketplace_state(db) == before


class TestMethodIsCheckedBeforeData:
    @pytest.mark.parametrize(("case", "method"), WRONG_METHODS, ids=WRONG_METHOD_IDS)
    async def test_a_wrong_method_is_405_even_with_bad_data_on_a_missing_resource(
        self, db, case, method
    ):
        failure = await failure_of(db, case, method=method, resource_id=MISSING, data=case.bad_data)
        assert isinstance(failure, MethodNotAllowed), f"{failure!r} instead of 405"
        assert f"use {case.method.value}" in failure.message

    @pytest.mark.parametrize("case", CASES, ids=str)
    async def test_a_wrong_method_is_405_for_an_actor_who_may_not_act_either(self, db, case):
        wrong = next(m for m in Method if m is not case.method)
        failure = await failure_of(db, case, OUTSIDER, method=wrong)
        assert isinstance(failure, MethodNotAllowed)


class TestDataIsValidatedBeforeTheResourceIsLookedUp:
    @pytest.mark.parametrize("case", CASES, ids=str)
    async def test_bad_data_on_a_missing_resource_is_400_naming_the_field(self, db, case):
        failure = await failure_of(db, case, resource_id=MISSING, data=case.bad_data)
        assert isinstance(failure, InvalidData), f"{failure!r} instead of 400"
        assert failure.message.startswith(f"{case.bad_field}: ")

    @pytest.mark.parametrize("case", CASES, ids=str)
    async def test_an_unknown_field_is_400_naming_it(self, db, case):
        failure = await failure_of(db, case, data={**case.data, "colour": "blue"})
        assert isinstance(failure, InvalidData)
        assert failure.message == "colour: Extra inputs are not permitted"

    async def test_every_offending_field_is_named(self, db):
        failure = await failure_of(
            db, ORDER_UPDATE, data={"notes": 1, "price": "1.001", "status": "archived"}
        )
        assert isinstance(failure, InvalidData)
        for field in ("notes", "price", "status"):
            assert f"{field}: " in failure.message

    @pytest.mark.parametrize("case", [c for c in CASES if c.name in TEXT_FIELDS], ids=str)
    async def test_a_nul_character_in_text_is_400_not_a_crash(self, db, case):
        text_field = TEXT_FIELDS[case.name]
        failure = await failure_of(db, case, data={**case.data, text_field: "a\x00b"})
        assert isinstance(failure, InvalidData)
        assert failure.message.startswith(f"{text_field}: ")
        assert "NUL" in failure.message

    @pytest.mark.parametrize(
        ("case", "data"),
        [
            (ORDER_UPDATE, {}),
            (SERVICE_UPDATE, {}),
            (SERVICE_UPDATE, {"name": None}),
            (USER_UPDATE, {"email": None}),
        ],
        ids=[
            "order_update empty",
            "service_update empty",
            "service_update null",
            "user_update null",
        ],
    )
    async def test_empty_or_null_data_on_a_missing_resource_is_400(self, db, case, data):
        failure = await failure_of(db, case, resource_id=MISSING, data=data)
        assert isinstance(failure, InvalidData), f"{failure!r} instead of 400"

    @pytest.mark.parametrize(
        ("case", "data", "message"),
        [
            (ORDER_UPDATE, {}, "data: at least one of status, notes, price is required"),
            (
                SERVICE_UPDATE,
                {},
                "data: at least one of name, description, price, category, is_active",
            ),
            (SERVICE_UPDATE, {"name": None}, "name: may not be null"),
            (USER_UPDATE, {"email": None}, "email: may not be null"),
        ],
        ids=[
            "order_update empty",
            "service_update empty",
            "service_update null",
            "user_update null",
        ],
    )
    async def test_empty_or_null_data_on_an_existing_resource_is_400(self, db, case, data, message):
        failure = await failure_of(db, case, data=data)
        assert isinstance(failure, InvalidData)
        assert failure.message.startswith(message)

    @pytest.mark.parametrize(
        ("field", "beside"),
        [("status", {"notes": "x"}), ("notes", {"status": "accepted"}), ("price", {"notes": "x"})],
        ids=["status", "notes", "price"],
    )
    async def test_an_explicit_null_in_order_update_is_400_naming_the_field(
        self, db, field, beside
    ):
        failure = await failure_of(db, ORDER_UPDATE, data={field: None, **beside})
        assert isinstance(failure, InvalidData)
        assert failure.message.startswith(f"{field}: ")


class TestMissingResource:
    @pytest.mark.parametrize("case", CASES, ids=str)
    async def test_valid_data_on_a_missing_resource_is_404(self, db, case):
        failure = await failure_of(db, case, resource_id=MISSING)
        assert isinstance(failure, ResourceNotFound), f"{failure!r} instead of 404"
        assert str(MISSING) in failure.message

    @pytest.mark.parametrize(
        "case", [ORDER_UPDATE, SERVICE_UPDATE, USER_UPDATE, APPEND_NOTE], ids=str
    )
    async def test_a_missing_resource_is_404_before_per_resource_permission(self, db, case):
        # Whether a client may touch the resource depends on the resource, so it must exist.
        failure = await failure_of(db, case, OUTSIDER, resource_id=MISSING)
        assert isinstance(failure, ResourceNotFound)

    @pytest.mark.parametrize(
        ("case", "bad"),
        [(APPROVAL, False), (APPROVAL, True), (BULK_DELETE, False), (BULK_DELETE, True)],
        ids=["approval", "approval bad data", "delete", "delete bad data"],
    )
    async def test_a_role_only_refusal_comes_before_data_and_lookup(self, db, case, bad):
        # Approvals (back office) and deletes (admin) depend on the actor alone: a client learns
        # neither whether a resource exists nor what data the operation takes.
        data = case.bad_data if bad else case.data
        failure = await failure_of(db, case, OUTSIDER, resource_id=MISSING, data=data)
        assert isinstance(failure, PermissionDenied)


# -- each handler's own rules ----------------------------------------------------------------------


class TestOrderUpdate:
    async def test_the_result_is_the_order_afterwards_and_it_is_saved(self, db):
        data = await run(
            db,
            HANDLERS["order_update"],
            ORDER_1_PROFESSIONAL,
            Method.PATCH,
            1,
            {"status": "accepted", "price": "120.5"},
        )
        assert data == {
            "id": 1,
            "client_id": ORDER_1_CLIENT,
            "professional_id": 2,
            "service_id": 3,
            "status": "accepted",
            "notes": "",
            "price": "120.50",
        }
        assert (db.orders[1].status, db.orders[1].price) == (
            OrderStatus.ACCEPTED,
            Decimal("120.50"),
        )

    async def test_a_party_hears_of_an_impossible_transition_as_409(self, db):
        failure = await failure_of(db, ORDER_UPDATE, ORDER_1_CLIENT, data={"status": "completed"})
        assert isinstance(failure, Conflict)

    async def test_a_stranger_is_refused_before_the_transition_is_checked(self, db):
        failure = await failure_of(db, ORDER_UPDATE, 3, data={"status": "completed"})
        assert isinstance(failure, PermissionDenied)

    async def test_a_party_without_the_right_is_refused(self, db):
        failure = await failure_of(db, ORDER_UPDATE, ORDER_1_CLIENT, data={"status": "accepted"})
        assert isinstance(failure, PermissionDenied)
        assert db.orders[1].status is OrderStatus.PENDING


class TestProfessionalApproval:
    @pytest.mark.parametrize("actor_id", [ADMIN, STAFF], ids=["admin", "staff"])
    async def test_back_office_approval_records_who_and_when(self, db, actor_id):
        data = await run(
            db,
            HANDLERS["professional_approval"],
            actor_id,
            Method.PATCH,
            2,
            {"approved": True, "verified": True, "reason": "documents checked"},
        )
        assert data == {
            "id": 2,
            "user_id": 7,
            "approved": True,
            "verified": True,
            "approved_by": actor_id,
            "approved_at": NOW.isoformat(),
            "reason": "documents checked",
        }
        saved = db.professionals[2]
        assert (saved.approved, saved.approved_by, saved.approved_at) == (True, actor_id, NOW)

    @pytest.mark.parametrize("actor_id", [3, 6, 7], ids=["client", "professional", "themselves"])
    async def test_anybody_else_is_refused(self, db, actor_id):
        failure = await failure_of(db, APPROVAL, actor_id)
        assert isinstance(failure, PermissionDenied)
        assert db.professionals[2].approved is False


class TestServiceUpdate:
    @pytest.mark.parametrize(
        "actor_id", [6, ADMIN, STAFF], ids=["own professional", "admin", "staff"]
    )
    async def test_may_be_changed_by_its_professional_or_back_office(self, db, actor_id):
        data = await run(
            db,
            HANDLERS["service_update"],
            actor_id,
            Method.PATCH,
            1,
            {"price": 80, "is_active": False},
        )
        assert (data["id"], data["price"], data["is_active"]) == (1, "80.00", False)
        assert (db.services[1].price, db.services[1].is_active) == (Decimal("80"), False)
        assert db.services[1].name == "Service 1"

    @pytest.mark.parametrize("actor_id", [7, 3], ids=["another professional", "client"])
    async def test_anybody_else_is_refused(self, db, actor_id):
        failure = await failure_of(db, SERVICE_UPDATE, actor_id)
        assert isinstance(failure, PermissionDenied)

    @pytest.mark.parametrize("price", ["120.505", 120.505], ids=["string", "number"])
    async def test_a_price_with_three_decimal_places_is_400_naming_price(self, db, price):
        failure = await failure_of(db, SERVICE_UPDATE, data={"price": price})
        assert isinstance(failure, InvalidData)
        assert failure.message.startswith("price: "), failure.message
        assert db.services[1].price == Decimal("100.00")


class TestUserUpdate:
    async def test_a_user_changes_their_own_profile(self, db):
        data = await run(
            db,
            HANDLERS["user_update"],
            3,
            Method.PATCH,
            3,
            {"name": "Ana", "email": "ana@example.com", "phone": "+55 11 5555-0000"},
        )
        assert data == {
            "id": 3,
            "name": "Ana",
            "email": "ana@example.com",
            "phone": "+55 11 5555-0000",
            "role": "client",
            "is_active": True,
        }
        assert db.users[3].email == "ana@example.com"

    @pytest.mark.parametrize(
        "email", ["user4@example.com", "USER4@Example.COM"], ids=["same", "other case"]
    )
    async def test_an_email_another_user_has_is_a_conflict(self, db, email):
        failure = await failure_of(db, USER_UPDATE, 3, resource_id=3, data={"email": email})
        assert isinstance(failure, Conflict)
        assert failure.message.startswith("email: ")
        assert db.users[3].email == "user3@example.com"

    async def test_setting_ones_own_email_again_is_no_conflict(self, db):
        data = await run(
            db, HANDLERS["user_update"], 3, Method.PATCH, 3, {"email": "USER3@example.com"}
        )
        assert data["email"] == "USER3@example.com"

    async def test_an_email_given_up_by_its_owner_can_then_be_taken(self, db):
        await run(
            db, HANDLERS["user_update"], ADMIN, Method.PATCH, 4, {"email": "new4@example.com"}
        )
        await run(db, HANDLERS["user_update"], 3, Method.PATCH, 3, {"email": "user4@example.com"})
        assert db.users[3].email == "user4@example.com"

    async def test_permission_is_decided_before_the_email_conflict(self, db):
        failure = await failure_of(
            db, USER_UPDATE, 3, resource_id=5, data={"email": "user4@example.com"}
        )
        assert isinstance(failure, PermissionDenied)

    @pytest.mark.parametrize(
        ("actor_id", "target", "data"),
        [
            (3, 3, {"is_active": False}),
            (3, 3, {"role": "admin"}),
            (3, 3, {"name": "Carla", "role": "staff"}),
            (STAFF, ADMIN, {"is_active": False}),
            (STAFF, 3, {"role": "staff"}),
            (3, 4, {"name": "x"}),
        ],
        ids=[
            "own is_active",
            "own role",
            "own role beside a name",
            "staff deactivates admin",
            "staff sets role",
            "other user",
        ],
    )
    async def test_changes_beyond_the_actors_rights_are_refused(self, db, actor_id, target, data):
        before = marketplace_state(db)
        failure = await failure_of(db, USER_UPDATE, actor_id, resource_id=target, data=data)
        assert isinstance(failure, PermissionDenied)
        assert marketplace_state(db) == before, "a refused change applies none of its fields"

    @pytest.mark.parametrize("actor_id", [ADMIN, STAFF], ids=["admin", "staff"])
    async def test_back_office_changes_their_own_profile(self, db, actor_id):
        data = await run(
            db, HANDLERS["user_update"], actor_id, Method.PATCH, actor_id, {"name": "Renamed"}
        )
        assert (data["id"], data["name"]) == (actor_id, "Renamed")
        assert db.users[actor_id].name == "Renamed"

    async def test_staff_deactivates_a_client_and_admin_promotes_them(self, db):
        await run(db, HANDLERS["user_update"], STAFF, Method.PATCH, 3, {"is_active": False})
        await run(db, HANDLERS["user_update"], ADMIN, Method.PATCH, 3, {"role": "staff"})
        assert (db.users[3].is_active, db.users[3].role) == (False, Role.STAFF)

    async def test_phone_may_be_cleared(self, db):
        db.users[3] = replace(db.users[3], phone="123")
        data = await run(db, HANDLERS["user_update"], 3, Method.PATCH, 3, {"phone": None})
        assert data["phone"] is None
        assert db.users[3].phone is None


# What reads each kind of resource back, with an operation that would otherwise succeed.
READ_BACK: dict[ResourceKind, tuple[Case, int]] = {
    ResourceKind.ORDER: (ORDER_UPDATE, 1),
    ResourceKind.PROFESSIONAL: (APPROVAL, 2),
    ResourceKind.SERVICE: (SERVICE_UPDATE, 1),
    ResourceKind.USER: (USER_UPDATE, 4),
}


class TestBulkDelete:
    @pytest.mark.parametrize("kind", list(ResourceKind))
    async def test_an_admin_deletes_and_the_resource_is_then_not_found(self, db, kind):
        case, resource_id = READ_BACK[kind]
        data = await run(
            db, HANDLERS["bulk_delete"], ADMIN, Method.DELETE, resource_id, {"resource": kind.value}
        )
        assert data == {"id": resource_id, "resource": kind.value, "deleted": True}
        assert (kind, resource_id) in db.deleted

        failure = await failure_of(db, case, resource_id=resource_id)
        assert isinstance(failure, ResourceNotFound), f"{failure!r}: a deleted {kind} was found"

    @pytest.mark.parametrize("kind", list(ResourceKind))
    async def test_the_row_stays_only_marked_deleted(self, db, kind):
        _, resource_id = READ_BACK[kind]
        await run(
            db, HANDLERS["bulk_delete"], ADMIN, Method.DELETE, resource_id, {"resource": kind.value}
        )
        table = {
            ResourceKind.ORDER: db.orders,
            ResourceKind.PROFESSIONAL: db.professionals,
            ResourceKind.SERVICE: db.services,
            ResourceKind.USER: db.users,
        }[kind]
        assert resource_id in table, "a soft delete must keep the row"

    @pytest.mark.parametrize("kind", list(ResourceKind))
    async def test_deleting_twice_is_not_found(self, db, kind):
        _, resource_id = READ_BACK[kind]
        case = replace(BULK_DELETE, resource_id=resource_id, data={"resource": kind.value})
        await run_case(db, case)
        failure = await failure_of(db, case)
        assert isinstance(failure, ResourceNotFound)
        assert failure.message == f"{kind.value} {resource_id} does not exist"

    async def test_deleting_twice_in_one_transaction_is_not_found(self, db):
        operation = Operation(method=Method.DELETE, resource_id=1, data={"resource": "order"})
        async with FakeUnitOfWork(db) as uow:
            ctx = OperationContext(uow, ADMIN, await uow.marketplace.get_actor(ADMIN), NOW)
            await HANDLERS["bulk_delete"](ctx, operation)
            with pytest.raises(ResourceNotFound):
                await HANDLERS["bulk_delete"](ctx, operation)

    async def test_only_the_named_kind_is_deleted(self, db):
        await run_case(db, BULK_DELETE)  # order 1
        data = await run_case(db, SERVICE_UPDATE)  # service 1 still there
        assert data["id"] == 1
        assert await run(db, HANDLERS["order_update"], ADMIN, Method.PATCH, 2, {"notes": "ok"})

    @pytest.mark.parametrize("actor_id", [STAFF, 3, 7], ids=["staff", "client", "professional"])
    async def test_only_an_admin_may_delete(self, db, actor_id):
        failure = await failure_of(db, BULK_DELETE, actor_id)
        assert isinstance(failure, PermissionDenied)
        assert failure.message == "only an admin may delete resources"
        assert db.deleted == set()


class TestAppendOrderNote:
    async def test_the_first_line_becomes_the_notes(self, db):
        data = await run(db, append_order_note, ORDER_1_CLIENT, Method.POST, 1, {"text": "hello"})
        assert data["notes"] == "hello"
        assert db.orders[1].notes == "hello"

    async def test_later_lines_are_appended_on_a_new_line(self, db):
        for actor_id, text in ((ORDER_1_CLIENT, "first"), (ORDER_1_PROFESSIONAL, "second")):
            await run(db, append_order_note, actor_id, Method.POST, 1, {"text": text})
        assert db.orders[1].notes == "first\nsecond"

    async def test_the_notes_keep_their_last_2000_characters(self, db):
        db.orders[1] = replace(db.orders[1], notes="a" * 1999)
        data = await run(db, append_order_note, ADMIN, Method.POST, 1, {"text": "b" * 500})
        notes = data["notes"]
        assert len(notes) == 2000
        assert notes.endswith("\n" + "b" * 500)

    async def test_a_party_may_append_even_to_a_completed_order(self, db):
        db.orders[1] = replace(db.orders[1], status=OrderStatus.COMPLETED)
        data = await run(db, append_order_note, ORDER_1_CLIENT, Method.POST, 1, {"text": "thanks"})
        assert data["status"] == "completed"

    async def test_a_stranger_may_not_append(self, db):
        failure = await failure_of(db, APPEND_NOTE, 3)
        assert isinstance(failure, PermissionDenied)
        assert db.orders[1].notes == ""

    @pytest.mark.parametrize("text", ["", "x" * 501, 5], ids=["empty", "too long", "number"])
    async def test_a_line_must_be_1_to_500_characters_of_text(self, db, text):
        failure = await failure_of(db, APPEND_NOTE, data={"text": text})
        assert isinstance(failure, InvalidData)
        assert failure.message.startswith("text: ")
