"""Every operation type end to end through the real broker and database, each mode, each error
code reached for real, and custom handlers loaded from their entry points (docs/contract.md).

Who may do what, and each type's own rules, are unit tests on the in-memory unit of work
(tests/unit/test_order_rules.py, test_catalog_rules.py, test_handlers.py); a test here checks
what only the real service shows: SQL, transactions, routing keys and the plugin loading."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Table, select, update

from consumer.adapters.tables import orders, professionals, services, users
from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.service_layer.handlers import OperationContext
from contracts import BatchCompleted, BatchRequest, BatchStatus, ErrorCode, Operation, Outcome
from publisher import BatchPublisher
from tests.integration.helpers import (
    batch,
    batch_row,
    dead_letters,
    eventually,
    fetch,
    patch,
    waiting_on_a_lock,
)
from tests.support import EventLog, observer_engine

# Seeded marketplace (docs/contract.md, Demo data): order i has client 3 + i % 3 and
# professional 1 + i % 3, whose user is 6 + i % 3; services 2k-1 and 2k belong to
# professional k (user 5 + k).
ADMIN, STAFF, CLIENT, PROFESSIONAL = 1, 2, 3, 6


# -- building and publishing batches -------------------------------------------------------


def post(resource_id: int, **data: Any) -> dict[str, Any]:
    return {"method": "POST", "resource_id": resource_id, "data": data}


def delete(resource_id: int, resource: str) -> dict[str, Any]:
    return {"method": "DELETE", "resource_id": resource_id, "data": {"resource": resource}}


def typed(
    operation_type: str, actor_id: int, *operations: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    return batch(actor_id, *operations, operation_type=operation_type, **fields)


def note(text: str, resource_id: int) -> dict[str, Any]:
    return post(resource_id, text=text)


async def publish(settings: Settings, *bodies: dict[str, Any]) -> list[BatchRequest]:
    """Publish every body at once, each as its own batch, with publisher confirms."""
    requests = [BatchRequest.model_validate_json(json.dumps(body)) for body in bodies]
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await asyncio.gather(*(publisher.publish(request) for request in requests))
    return requests


def assert_consistent(completion: BatchCompleted) -> None:
    """Counters add up and agree with the results; failures carry an error and no data."""
    c = completion
    counters = (c.completed_operations, c.failed_operations, c.skipped_operations)
    assert sum(counters) == c.total_operations, f"counters {counters} of {c.total_operations}"
    outcomes = Counter(r.outcome for r in c.results)
    assert counters == (
        outcomes[Outcome.SUCCEEDED],
        outcomes[Outcome.FAILED],
        outcomes[Outcome.SKIPPED],
    ), f"counters {counters} disagree with the results {c.results}"
    assert [r.index for r in c.results] == list(range(c.total_operations))
    for result in c.results:
        if result.success:
            assert (result.status, result.error) == (200, None), result
        else:
            assert result.error is not None, result
            assert result.data is None, result
            assert result.status == result.error.code.status, result


async def completions(events: EventLog, requests: Sequence[BatchRequest]) -> list[BatchCompleted]:
    """The completion of each request, in the order given, every one checked for consistency."""
    wanted = {request.batch_id for request in requests}

    def all_finished(received: list[tuple[str, Any]]) -> bool:
        done = {e.batch_id for _, e in received if isinstance(e, BatchCompleted)}
        return wanted <= done

    await events.wait_for(all_finished)
    found = {e.batch_id: e for _, e in events.received if isinstance(e, BatchCompleted)}
    finished = [found[request.batch_id] for request in requests]
    for completion in finished:
        assert_consistent(completion)
    return finished


async def run(settings: Settings, events: EventLog, body: dict[str, Any]) -> BatchCompleted:
    (request,) = await publish(settings, body)
    (completion,) = await completions(events, [request])
    return completion


def operation_keys(events: EventLog, batch_id: UUID) -> list[str]:
    return [key for key, _ in sorted(events.operations(batch_id), key=lambda ke: ke[1].index)]


def completion_key(events: EventLog, batch_id: UUID) -> str:
    (key,) = [
        k for k, e in events.received if isinstance(e, BatchCompleted) and e.batch_id == batch_id
    ]
    return key


def codes(completion: BatchCompleted) -> list[ErrorCode | None]:
    return [r.error.code if r.error else None for r in completion.results]


def statuses(completion: BatchCompleted) -> list[int]:
    return [r.status for r in completion.results]


def message(completion: BatchCompleted, index: int) -> str:
    error = completion.results[index].error
    assert error is not None, f"operation {index} did not fail: {completion.results[index]}"
    return error.message


async def rows(database_url: str, table: Table) -> dict[int, Any]:
    return {row.id: row for row in await fetch(database_url, select(table))}


async def row(database_url: str, table: Table, resource_id: int) -> Any:
    return (await rows(database_url, table))[resource_id]


# -- 1. each operation type end to end ----------------------------------------------------


@pytest.mark.usefixtures("service")
class TestProfessionalApproval:
    async def test_a_decision_records_who_made_it_and_when_in_the_row_and_the_event(
        self, settings: Settings, events: EventLog
    ) -> None:
        before = datetime.now(UTC)
        approve, reject = await publish(
            settings,
            typed(
                "professional_approval",
                ADMIN,
                patch(2, approved=True, verified=True, reason="documents checked"),
            ),
            typed("professional_approval", STAFF, patch(3, approved=False, reason="no license")),
        )
        approved, rejected = await completions(events, [approve, reject])
        after = datetime.now(UTC)

        data = approved.results[0].data
        assert data is not None
        approved_at = datetime.fromisoformat(data.pop("approved_at"))
        assert data == {
            "id": 2,
            "user_id": 7,
            "approved": True,
            "verified": True,
            "approved_by": ADMIN,
            "reason": "documents checked",
        }
        assert before <= approved_at <= after
        table = await rows(settings.database_url, professionals)
        assert (table[2].approved, table[2].verified, table[2].approved_by) == (True, True, ADMIN)
        assert table[2].approved_at == approved_at, "the row and the event must agree on when"
        assert table[2].approval_reason == "documents checked"
        assert rejected.results[0].data is not None
        assert rejected.results[0].data["approved_by"] == STAFF
        assert (table[3].approved, table[3].verified, table[3].approved_by) == (False, False, STAFF)
        assert table[3].approved_at is not None
        assert operation_keys(events, approve.batch_id) == [
            "operation.professional_approval.succeeded"
        ]


@pytest.mark.usefixtures("service")
class TestServiceUpdate:
    async def test_fields_change_and_a_price_may_be_a_string_or_a_number(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "service_update",
                PROFESSIONAL,
                patch(1, price="120.50", name="Deep cleaning"),
                patch(2, price=120.5, category="deep-cleaning", is_active=False),
            ),
        )

        assert completion.status is BatchStatus.COMPLETED
        assert completion.results[0].data == {
            "id": 1,
            "professional_id": 1,
            "name": "Deep cleaning",
            "description": "Demo service 1",
            "price": "120.50",
            "category": "cleaning",
            "is_active": True,
        }
        second = completion.results[1].data
        assert second is not None
        assert (second["price"], second["category"], second["is_active"]) == (
            "120.50",
            "deep-cleaning",
            False,
        )
        table = await rows(settings.database_url, services)
        assert (table[1].price, table[1].name) == (Decimal("120.50"), "Deep cleaning")
        assert (table[2].price, table[2].category, table[2].is_active) == (
            Decimal("120.50"),
            "deep-cleaning",
            False,
        )
        assert (
            operation_keys(events, completion.batch_id)
            == ["operation.service_update.succeeded"] * 2
        )
        assert completion_key(events, completion.batch_id) == "batch.service_update.completed"


@pytest.mark.usefixtures("service")
class TestUserUpdate:
    async def test_an_email_taken_by_another_user_is_a_conflict_and_a_malformed_one_invalid(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "user_update",
                CLIENT,
                patch(CLIENT, email="client4@example.com"),
                patch(CLIENT, email="not-an-email"),
                patch(CLIENT, email="carla@example.org"),
            ),
        )

        assert statuses(completion) == [409, 400, 200]
        assert codes(completion) == [ErrorCode.CONFLICT, ErrorCode.VALIDATION_ERROR, None]
        assert operation_keys(events, completion.batch_id) == [
            "operation.user_update.failed",
            "operation.user_update.failed",
            "operation.user_update.succeeded",
        ]
        assert completion_key(events, completion.batch_id) == "batch.user_update.partial"
        assert "email" in message(completion, 0)
        assert message(completion, 1).startswith("email"), completion.results[1]
        assert (await row(settings.database_url, users, CLIENT)).email == "carla@example.org"
        assert (await row(settings.database_url, users, 4)).email == "client4@example.com"

    async def test_an_email_claimed_by_a_concurrent_transaction_is_still_a_conflict(
        self, settings: Settings, events: EventLog
    ) -> None:
        # Another writer (e.g. a concurrent batch) holds the address uncommitted; the batch's
        # check cannot see it, and its write then waits on the unique index until it commits.
        engine = observer_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                other_writer = await conn.begin()
                await conn.execute(
                    update(users).where(users.c.id == 4).values(email="shared@example.com")
                )
                (request,) = await publish(
                    settings,
                    typed("user_update", CLIENT, patch(CLIENT, email="shared@example.com")),
                )

                async def batch_waits_on_the_other_writer() -> bool:
                    return await waiting_on_a_lock(settings.database_url)

                await eventually(batch_waits_on_the_other_writer, what="the batch to block")
                await other_writer.commit()
        finally:
            await engine.dispose()

        (completion,) = await completions(events, [request])

        assert codes(completion) == [ErrorCode.CONFLICT], completion.results
        assert (await row(settings.database_url, users, CLIENT)).email == "client3@example.com"


@pytest.mark.usefixtures("service")
class TestBulkDelete:
    async def test_a_deleted_row_stays_marked_and_no_later_operation_finds_it(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "bulk_delete",
                ADMIN,
                delete(30, "order"),
                delete(30, "order"),
                delete(6, "service"),
                delete(3, "professional"),
                delete(5, "user"),
                delete(5, "user"),
            ),
        )

        assert statuses(completion) == [200, 404, 200, 200, 200, 404]
        assert codes(completion)[1] is ErrorCode.NOT_FOUND
        assert codes(completion)[5] is ErrorCode.NOT_FOUND
        assert completion.results[0].data == {"id": 30, "resource": "order", "deleted": True}
        assert operation_keys(events, completion.batch_id) == [
            "operation.bulk_delete.succeeded",
            "operation.bulk_delete.failed",
            "operation.bulk_delete.succeeded",
            "operation.bulk_delete.succeeded",
            "operation.bulk_delete.succeeded",
            "operation.bulk_delete.failed",
        ]
        assert completion_key(events, completion.batch_id) == "batch.bulk_delete.partial"
        for table, resource_id in ((orders, 30), (services, 6), (professionals, 3), (users, 5)):
            kept = await rows(settings.database_url, table)
            assert resource_id in kept, f"{table.name} {resource_id} must stay (soft delete)"
            assert kept[resource_id].deleted_at is not None, f"{table.name} {resource_id}"
        assert (await row(settings.database_url, orders, 27)).deleted_at is None

        # Every type's look-up, in later batches, skips what was deleted.
        requests = await publish(
            settings,
            typed("bulk_delete", ADMIN, delete(30, "order")),
            typed("order_update", ADMIN, patch(30, notes="too late")),
            typed("custom", ADMIN, note("too late", 30), handler="append_order_note"),
            typed("service_update", ADMIN, patch(6, name="Ghost service")),
            typed("professional_approval", ADMIN, patch(3, approved=True)),
            typed("user_update", ADMIN, patch(5, name="Ghost")),
            # The deleted user is no longer an actor at all: unknown, so 403 (on order 2, whose
            # client user 5 was).
            typed("order_update", 5, patch(2, notes="from beyond")),
        )
        *lookups, as_actor = await completions(events, requests)

        for later in lookups:
            assert codes(later) == [ErrorCode.NOT_FOUND], later.results
        assert codes(as_actor) == [ErrorCode.PERMISSION_DENIED]
        deleted = await row(settings.database_url, orders, 30)
        assert (deleted.notes, deleted.deleted_at is not None) == ("", True)
        assert (await row(settings.database_url, orders, 2)).notes == ""
        assert (await row(settings.database_url, services, 6)).name != "Ghost service"
        assert (await row(settings.database_url, professionals, 3)).approved_by is None
        assert (await row(settings.database_url, users, 5)).name != "Ghost"


# -- 2. custom handlers --------------------------------------------------------------------


@pytest.mark.usefixtures("service")
class TestCustomHandlers:
    async def test_a_handler_of_an_installed_plugin_runs_and_an_unregistered_name_is_rejected(
        self, settings: Settings, events: EventLog
    ) -> None:
        # append_order_note comes from the example plugin (examples/handlers), loaded through its
        # entry point like any third-party package's.
        notes, unknown = await publish(
            settings,
            typed(
                "custom",
                CLIENT,
                note("ring twice", 3),
                note("leave it at the door", 3),
                note("not my order", 1),
                handler="append_order_note",
            ),
            typed("custom", ADMIN, note("x", 6), handler="no_such_handler"),
        )
        (completion,) = await completions(events, [notes])
        key, rejection = await events.rejection()

        assert completion.operation_type == "custom"
        assert statuses(completion) == [200, 200, 403]
        assert completion.results[1].data is not None
        assert completion.results[1].data["notes"] == "ring twice\nleave it at the door"
        assert operation_keys(events, completion.batch_id) == [
            "operation.custom.succeeded",
            "operation.custom.succeeded",
            "operation.custom.failed",
        ]
        assert completion_key(events, completion.batch_id) == "batch.custom.partial"
        assert (await row(settings.database_url, orders, 3)).notes == (
            "ring twice\nleave it at the door"
        )
        assert (await row(settings.database_url, orders, 1)).notes == ""

        assert key == "batch.custom.rejected"
        assert rejection.batch_id == unknown.batch_id
        assert rejection.status is BatchStatus.REJECTED
        assert [(e.type, e.loc) for e in rejection.errors] == [("unknown_handler", ["handler"])]
        # Nothing ran; the refused batch is on record as rejected, under its own type.
        stored = await batch_row(settings.database_url, unknown.batch_id)
        assert stored is not None, "a refused request with a valid batch_id is on record"
        assert (stored.status, stored.code, stored.handler) == (
            "rejected",
            "VALIDATION_ERROR",
            "no_such_handler",
        )
        assert (await row(settings.database_url, orders, 6)).notes == ""

        async def dead_lettered() -> bool:
            return (
                len(await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue)) == 1
            )

        await eventually(dead_lettered, what="the rejected request in the dead-letter queue")


# -- 3. every error code of docs/contract.md ------------------------------------------------

INTERNALS = "db.internal:5432 role batchops_rw"


@dataclass
class FaultyHandlers:
    """Custom handlers that fail unexpectedly; counts how often the flaky one was tried."""

    flaky_calls: int = 0

    async def boom(self, _ctx: OperationContext, _operation: Operation) -> dict[str, Any]:
        raise RuntimeError(f"handler bug leaking {INTERNALS}")

    async def flaky(self, _ctx: OperationContext, _operation: Operation) -> dict[str, Any]:
        self.flaky_calls += 1
        raise ConnectionResetError(f"connection reset by {INTERNALS}")


@pytest.fixture
async def faulty(settings: Settings, events: EventLog) -> AsyncIterator[FaultyHandlers]:
    """batchops running with the custom handlers `boom` and `flaky` (instead of `service`)."""
    handlers = FaultyHandlers()
    svc = bootstrap(settings, custom_handlers={"boom": handlers.boom, "flaky": handlers.flaky})
    task = asyncio.create_task(svc.run())
    ready = asyncio.create_task(svc.started.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # start-up failed: raise its error here
    assert ready in done, "the service did not start within 20s"
    yield handlers
    svc.stop()
    await asyncio.wait_for(task, 30)


@pytest.mark.usefixtures("service")
class TestExpectedFailureCodes:
    async def test_each_expected_failure_reports_its_own_code_status_and_routing_key(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "order_update",
                CLIENT,
                patch(3, colour="red"),  # unknown field
                patch(1, notes="x"),  # client 4's order
                patch(9999, notes="x"),  # no such order
                post(6, notes="x"),  # order_update is PATCH only
                patch(9, status="completed"),  # pending -> completed is no transition
                patch(12, notes="fine"),
            ),
        )

        assert codes(completion) == [
            ErrorCode.VALIDATION_ERROR,
            ErrorCode.PERMISSION_DENIED,
            ErrorCode.NOT_FOUND,
            ErrorCode.METHOD_NOT_ALLOWED,
            ErrorCode.CONFLICT,
            None,
        ]
        assert statuses(completion) == [400, 403, 404, 405, 409, 200]
        assert "colour" in message(completion, 0)
        assert operation_keys(events, completion.batch_id) == [
            *["operation.order_update.failed"] * 5,
            "operation.order_update.succeeded",
        ]
        assert completion.status is BatchStatus.PARTIAL
        table = await rows(settings.database_url, orders)
        assert [table[i].notes for i in (3, 1, 6, 12)] == ["", "", "", "fine"]
        assert table[9].status == "pending"


class TestUnexpectedFailureCodes:
    async def test_a_crash_is_internal_error_and_a_lasting_transient_fault_unavailable(
        self, settings: Settings, events: EventLog, faulty: FaultyHandlers
    ) -> None:
        crash, transient = await publish(
            settings,
            typed("custom", ADMIN, note("x", 3), note("y", 6), handler="boom"),
            typed("custom", ADMIN, note("x", 9), handler="flaky"),
        )
        crashed, unavailable = await completions(events, [crash, transient])

        assert codes(crashed) == [ErrorCode.INTERNAL_ERROR] * 2
        assert statuses(crashed) == [500, 500]
        for index in (0, 1):
            text = message(crashed, index)
            assert "db.internal" not in text
            assert "handler bug" not in text, f"the message must hide internals: {text!r}"
        assert crashed.status is BatchStatus.FAILED
        assert completion_key(events, crash.batch_id) == "batch.custom.failed"

        assert codes(unavailable) == [ErrorCode.UNAVAILABLE]
        assert statuses(unavailable) == [503]
        assert "db.internal" not in message(unavailable, 0)
        assert faulty.flaky_calls > 1, "retried, then reported"
        assert operation_keys(events, transient.batch_id) == ["operation.custom.failed"]


# -- 4. modes ------------------------------------------------------------------------------


@pytest.mark.usefixtures("service")
class TestModes:
    async def test_atomic_commits_all_or_nothing(
        self, settings: Settings, events: EventLog
    ) -> None:
        failing, succeeding = await publish(
            settings,
            typed(
                "service_update",
                PROFESSIONAL,
                patch(1, price="150.00"),
                patch(2, name="Renamed"),
                patch(3, description="not mine"),  # service 3 is professional 2's
                patch(1, category="deep-cleaning"),
                mode="atomic",
            ),
            typed(
                "user_update",
                ADMIN,
                patch(3, name="Carla C."),
                patch(4, role="staff"),
                patch(5, is_active=False),
                mode="atomic",
            ),
        )
        completion, complete = await completions(events, [failing, succeeding])

        # With a failure: everything rolled back, the failing operation blamed, the rest skipped.
        assert completion.status is BatchStatus.FAILED
        assert codes(completion) == [
            ErrorCode.SKIPPED,
            ErrorCode.SKIPPED,
            ErrorCode.PERMISSION_DENIED,
            ErrorCode.SKIPPED,
        ]
        assert statuses(completion) == [424, 424, 403, 424]
        counters = (
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        )
        assert counters == (0, 1, 3)
        assert operation_keys(events, completion.batch_id) == [
            "operation.service_update.skipped",
            "operation.service_update.skipped",
            "operation.service_update.failed",
            "operation.service_update.skipped",
        ]
        assert completion_key(events, completion.batch_id) == "batch.service_update.failed"
        table = await rows(settings.database_url, services)
        assert (table[1].price, table[1].category) == (Decimal("100.00"), "cleaning")
        assert table[2].name == "Cleaning service 2", "operation 1 ran before the failure"

        # Without: every effect, committed together.
        assert complete.status is BatchStatus.COMPLETED
        assert (complete.completed_operations, complete.success_rate) == (3, 100.0)
        people = await rows(settings.database_url, users)
        assert (people[3].name, people[4].role, people[5].is_active) == ("Carla C.", "staff", False)

    async def test_stop_on_error_skips_the_rest_with_424_and_skipped_routing_keys(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "user_update",
                CLIENT,
                patch(CLIENT, name="Carla C."),
                patch(4, name="Not me"),
                patch(CLIENT, phone="+55 11 5555-0000"),
                patch(CLIENT, email="carla@example.org"),
                mode="stop_on_error",
            ),
        )

        assert completion.status is BatchStatus.PARTIAL
        assert statuses(completion) == [200, 403, 424, 424]
        assert codes(completion) == [
            None,
            ErrorCode.PERMISSION_DENIED,
            ErrorCode.SKIPPED,
            ErrorCode.SKIPPED,
        ]
        counters = (
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        )
        assert counters == (1, 1, 2)
        assert operation_keys(events, completion.batch_id) == [
            "operation.user_update.succeeded",
            "operation.user_update.failed",
            "operation.user_update.skipped",
            "operation.user_update.skipped",
        ]
        client = await row(settings.database_url, users, CLIENT)
        assert (client.name, client.phone, client.email) == (
            "Carla C.",
            "+55 11 9000-0003",
            "client3@example.com",
        )

    async def test_continue_runs_every_operation_after_a_failure(
        self, settings: Settings, events: EventLog
    ) -> None:
        completion = await run(
            settings,
            events,
            typed(
                "professional_approval",
                STAFF,
                patch(2, approved=True),
                patch(99, approved=True),
                patch(3, approved=False, reason="missing documents"),
            ),
        )

        assert completion.status is BatchStatus.PARTIAL
        assert statuses(completion) == [200, 404, 200]
        counters = (
            completion.completed_operations,
            completion.failed_operations,
            completion.skipped_operations,
        )
        assert counters == (2, 1, 0)
        assert completion.success_rate == 66.67
        table = await rows(settings.database_url, professionals)
        assert (table[2].approved, table[3].approval_reason) == (True, "missing documents")
