"""order_update rules (consumer/domain/orders.py): the status machine and who may change what."""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal

import pytest
from pydantic import ValidationError

from consumer.domain.errors import Conflict, PermissionDenied
from consumer.domain.model import Actor, Order, OrderStatus, Role
from consumer.domain.orders import OrderChanges, update_order

PENDING = OrderStatus.PENDING
ACCEPTED = OrderStatus.ACCEPTED
IN_PROGRESS = OrderStatus.IN_PROGRESS
COMPLETED = OrderStatus.COMPLETED
CANCELLED = OrderStatus.CANCELLED

# Written out from docs/contract.md rather than imported, so that the table itself is under test.
ALLOWED_TRANSITIONS = {
    (PENDING, ACCEPTED),
    (PENDING, CANCELLED),
    (ACCEPTED, IN_PROGRESS),
    (ACCEPTED, CANCELLED),
    (IN_PROGRESS, COMPLETED),
    (IN_PROGRESS, CANCELLED),
}
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))

ADMIN = Actor(1, Role.ADMIN, is_active=True)
STAFF = Actor(2, Role.STAFF, is_active=True)
CLIENT = Actor(3, Role.CLIENT, is_active=True)  # the order's client
OTHER_CLIENT = Actor(4, Role.CLIENT, is_active=True)
PROFESSIONAL = Actor(6, Role.PROFESSIONAL, is_active=True)  # the order's professional
OTHER_PROFESSIONAL = Actor(7, Role.PROFESSIONAL, is_active=True)
STRANGERS = [OTHER_CLIENT, OTHER_PROFESSIONAL]
BACK_OFFICE = [ADMIN, STAFF]


def an_order(status: OrderStatus = PENDING) -> Order:
    return Order(
        id=10,
        client_id=CLIENT.id,
        professional_id=1,
        professional_user_id=PROFESSIONAL.id,
        service_id=1,
        status=status,
        notes="",
        price=Decimal("100.00"),
    )


def inactive(actor: Actor) -> Actor:
    return replace(actor, is_active=False)


def assert_refused(actor: Actor, order: Order, changes: OrderChanges) -> None:
    before = replace(order)
    with pytest.raises(PermissionDenied):
        update_order(actor, order, changes)
    assert order == before, "a refused update must leave the order as it was"


def name(pair: tuple[OrderStatus, OrderStatus]) -> str:
    return f"{pair[0]}->{pair[1]}"


class TestTransitionTable:
    @pytest.mark.parametrize("actor", BACK_OFFICE, ids=["admin", "staff"])
    @pytest.mark.parametrize("pair", sorted(ALLOWED_TRANSITIONS), ids=name)
    def test_an_allowed_transition_succeeds_for_back_office(self, pair, actor):
        current, target = pair
        order = an_order(current)
        update_order(actor, order, OrderChanges(status=target))
        assert order.status is target

    @pytest.mark.parametrize(
        "pair", [p for p in ALL_PAIRS if p not in ALLOWED_TRANSITIONS], ids=name
    )
    def test_any_other_transition_is_a_conflict_even_for_admin(self, pair):
        current, target = pair
        order = an_order(current)
        with pytest.raises(Conflict, match=f"from {current} to {target}"):
            update_order(ADMIN, order, OrderChanges(status=target))
        assert order.status is current

    @pytest.mark.parametrize("final", [COMPLETED, CANCELLED])
    def test_completed_and_cancelled_are_final(self, final):
        for target in OrderStatus:
            with pytest.raises(Conflict):
                update_order(ADMIN, an_order(final), OrderChanges(status=target))

    def test_the_conflict_carries_code_conflict(self):
        with pytest.raises(Conflict) as caught:
            update_order(ADMIN, an_order(COMPLETED), OrderChanges(status=PENDING))
        assert (caught.value.code.value, caught.value.code.status) == ("CONFLICT", 409)


class TestOrdersProfessional:
    @pytest.mark.parametrize(
        ("current", "target"),
        [(PENDING, ACCEPTED), (ACCEPTED, IN_PROGRESS), (IN_PROGRESS, COMPLETED)],
        ids=["accept", "start", "complete"],
    )
    def test_may_accept_start_and_complete(self, current, target):
        order = an_order(current)
        update_order(PROFESSIONAL, order, OrderChanges(status=target))
        assert order.status is target

    @pytest.mark.parametrize("current", [PENDING, ACCEPTED, IN_PROGRESS])
    def test_may_not_cancel(self, current):
        assert_refused(PROFESSIONAL, an_order(current), OrderChanges(status=CANCELLED))

    @pytest.mark.parametrize("current", [PENDING, IN_PROGRESS, COMPLETED])
    def test_may_set_notes(self, current):
        order = an_order(current)
        update_order(PROFESSIONAL, order, OrderChanges(notes="bring a ladder"))
        assert order.notes == "bring a ladder"

    @pytest.mark.parametrize("current", [PENDING, ACCEPTED])
    def test_may_set_the_price_while_pending_or_accepted(self, current):
        order = an_order(current)
        update_order(PROFESSIONAL, order, OrderChanges(price=Decimal("150.25")))
        assert order.price == Decimal("150.25")

    @pytest.mark.parametrize("current", [IN_PROGRESS, COMPLETED, CANCELLED])
    def test_may_not_set_the_price_once_work_has_started_or_ended(self, current):
        assert_refused(PROFESSIONAL, an_order(current), OrderChanges(price=Decimal("150.25")))

    def test_a_refused_change_applies_none_of_its_fields(self):
        order = an_order(PENDING)
        assert_refused(PROFESSIONAL, order, OrderChanges(status=CANCELLED, notes="sorry"))
        assert order.notes == ""


class TestOrdersClient:
    @pytest.mark.parametrize("current", [PENDING, ACCEPTED])
    def test_may_cancel_while_pending_or_accepted(self, current):
        order = an_order(current)
        update_order(CLIENT, order, OrderChanges(status=CANCELLED))
        assert order.status is CANCELLED

    def test_may_not_cancel_once_work_has_started(self):
        assert_refused(CLIENT, an_order(IN_PROGRESS), OrderChanges(status=CANCELLED))

    @pytest.mark.parametrize(
        ("current", "target"),
        [(PENDING, ACCEPTED), (ACCEPTED, IN_PROGRESS), (IN_PROGRESS, COMPLETED)],
        ids=["accept", "start", "complete"],
    )
    def test_may_not_move_the_work_forward(self, current, target):
        assert_refused(CLIENT, an_order(current), OrderChanges(status=target))

    @pytest.mark.parametrize("current", [PENDING, IN_PROGRESS, COMPLETED])
    def test_may_set_notes(self, current):
        order = an_order(current)
        update_order(CLIENT, order, OrderChanges(notes="the doorbell is broken"))
        assert order.notes == "the doorbell is broken"

    @pytest.mark.parametrize("current", [PENDING, ACCEPTED])
    def test_may_not_set_the_price(self, current):
        assert_refused(CLIENT, an_order(current), OrderChanges(price=Decimal("1.00")))

    def test_learns_of_an_impossible_transition_as_a_conflict(self):
        # The order is theirs, so a 409 tells them nothing new.
        with pytest.raises(Conflict):
            update_order(CLIENT, an_order(COMPLETED), OrderChanges(status=CANCELLED))


class TestAnybodyElse:
    @pytest.mark.parametrize("actor", STRANGERS, ids=["other client", "other professional"])
    @pytest.mark.parametrize(
        "changes",
        [
            OrderChanges(status=ACCEPTED),
            OrderChanges(status=CANCELLED),
            OrderChanges(notes="hello"),
            OrderChanges(price=Decimal("1.00")),
        ],
        ids=["accept", "cancel", "notes", "price"],
    )
    def test_a_user_who_is_no_party_of_the_order_is_refused(self, actor, changes):
        assert_refused(actor, an_order(PENDING), changes)

    def test_a_stranger_is_refused_before_the_transition_is_even_checked(self):
        # A 409 would tell a stranger the order's status.
        assert_refused(OTHER_CLIENT, an_order(COMPLETED), OrderChanges(status=PENDING))


class TestBackOffice:
    @pytest.mark.parametrize("actor", BACK_OFFICE, ids=["admin", "staff"])
    def test_may_cancel_an_order_in_progress(self, actor):
        order = an_order(IN_PROGRESS)
        update_order(actor, order, OrderChanges(status=CANCELLED))
        assert order.status is CANCELLED

    @pytest.mark.parametrize("actor", BACK_OFFICE, ids=["admin", "staff"])
    @pytest.mark.parametrize("current", list(OrderStatus))
    def test_may_set_price_and_notes_in_any_status(self, actor, current):
        order = an_order(current)
        update_order(actor, order, OrderChanges(notes="checked", price=Decimal("0.00")))
        assert (order.notes, order.price) == ("checked", Decimal("0.00"))


class TestInactiveActor:
    @pytest.mark.parametrize(
        "actor",
        [ADMIN, STAFF, CLIENT, PROFESSIONAL],
        ids=["admin", "staff", "order's client", "order's professional"],
    )
    @pytest.mark.parametrize(
        "changes",
        [OrderChanges(status=CANCELLED), OrderChanges(notes="x"), OrderChanges(status=ACCEPTED)],
        ids=["cancel", "notes", "accept"],
    )
    def test_an_inactive_actor_is_refused_whatever_their_role(self, actor, changes):
        assert_refused(inactive(actor), an_order(PENDING), changes)


class TestEmptyChange:
    def test_a_change_without_any_field_is_invalid_data(self):
        with pytest.raises(ValidationError, match="at least one of status, notes, price"):
            OrderChanges.model_validate({})

    def test_an_explicit_null_is_invalid_data(self):
        with pytest.raises(ValidationError, match="may not be null"):
            OrderChanges.model_validate({"status": None, "notes": "x"})


class TestOrderChangesValidation:
    def test_an_unknown_field_is_refused(self):
        with pytest.raises(ValidationError, match="colour"):
            OrderChanges.model_validate({"colour": "blue"})

    def test_an_unknown_status_is_refused(self):
        with pytest.raises(ValidationError, match="status"):
            OrderChanges.model_validate({"status": "archived"})

    def test_notes_of_2000_characters_are_accepted(self):
        assert OrderChanges.model_validate({"notes": "n" * 2000}).notes == "n" * 2000

    def test_notes_over_2000_characters_are_refused(self):
        with pytest.raises(ValidationError, match="notes"):
            OrderChanges.model_validate({"notes": "n" * 2001})

    def test_notes_must_be_text(self):
        with pytest.raises(ValidationError, match="notes"):
            OrderChanges.model_validate({"notes": 12})

    @pytest.mark.parametrize("price", ["1.005", 1.005, "0.001"])
    def test_a_price_with_three_decimal_places_is_refused(self, price):
        with pytest.raises(ValidationError, match="decimal places"):
            OrderChanges.model_validate({"price": price})

    @pytest.mark.parametrize("price", ["-0.01", -1, "1000000.01", 1_000_001])
    def test_a_price_outside_zero_to_one_million_is_refused(self, price):
        with pytest.raises(ValidationError, match="price"):
            OrderChanges.model_validate({"price": price})

    @pytest.mark.parametrize("price", ["0", "0.00", 1_000_000, "1000000.00"])
    def test_the_bounds_of_the_price_range_are_accepted(self, price):
        assert OrderChanges.model_validate({"price": price}).price == Decimal(price)

    @pytest.mark.parametrize("price", ["120.50", 120.5], ids=["json string", "json number"])
    def test_a_price_is_accepted_as_a_string_or_a_number(self, price):
        assert OrderChanges.model_validate({"price": price}).price == Decimal("120.50")

    def test_a_boolean_is_not_a_price(self):
        with pytest.raises(ValidationError, match="price"):
            OrderChanges.model_validate({"price": True})
