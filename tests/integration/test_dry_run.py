"""Dry runs against the real database and broker: every table of the marketplace stays byte for
byte as it was, in every mode, while the results say exactly what a real run says; only a
`dryrun.<type>.<status>` completion is published; the batch is stored as a dry run."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.service_layer.job_control import Verdict
from contracts import BatchCompleted, BatchRejected, BatchRequest, Mode
from publisher import BatchPublisher
from tests.faults.database import ScenarioDatabase
from tests.integration.helpers import batch_row, fetch, publish_raw
from tests.support import EventLog

# Every table of the marketplace, and the one other table that is not the batches' own record.
MARKETPLACE = ("users", "professionals", "services", "orders", "api_tokens")
ADMIN = 1


def request(
    operation_type: str, *operations: tuple[str, int, dict[str, Any]], **fields: Any
) -> BatchRequest:
    return BatchRequest.model_validate(
        {
            "batch_id": uuid.uuid4(),
            "operation_type": operation_type,
            "actor_id": ADMIN,
            "operations": [
                {"method": method, "resource_id": resource_id, "data": data}
                for method, resource_id, data in operations
            ],
            **fields,
        }
    )


def rehearsals(mode: Mode) -> list[BatchRequest]:
    """A batch of every operation type whose later operations depend on earlier effects, each
    with a failure that only those effects explain (or that the mode turns into a stop). The
    batches touch rows no other one reads, so that their real runs may go in any order."""
    return [
        request(
            "order_update",
            ("PATCH", 3, {"status": "accepted"}),
            ("PATCH", 3, {"status": "in_progress"}),  # only from accepted
            ("PATCH", 3, {"notes": "gate code 1234", "price": "80.00"}),
            ("PATCH", 3, {"status": "completed"}),  # only from in_progress
            ("PATCH", 6, {"status": "completed"}),  # CONFLICT: pending
            ("PATCH", 9, {"status": "cancelled"}),
            mode=mode,
        ),
        request(
            "professional_approval",
            ("PATCH", 2, {"approved": True, "verified": True, "reason": "documents checked"}),
            ("PATCH", 3, {"approved": False, "reason": "no documents"}),
            ("PATCH", 2, {"approved": False}),
            mode=mode,
        ),
        request(
            "service_update",
            ("PATCH", 1, {"name": "Deep cleaning", "price": "80.00"}),
            ("PATCH", 1, {"is_active": False}),
            ("PATCH", 2, {"category": "gardening", "description": "lawns"}),
            mode=mode,
        ),
        request(
            "user_update",
            ("PATCH", 4, {"email": "shared@example.com"}),
            ("PATCH", 5, {"email": "SHARED@example.com"}),  # CONFLICT: user 4 has it now
            ("PATCH", 3, {"name": "Carla Client", "phone": "+55 11 5555-0000"}),
            ("PATCH", 7, {"is_active": False}),
            mode=mode,
        ),
        request(
            "bulk_delete",
            ("DELETE", 12, {"resource": "order"}),
            ("DELETE", 12, {"resource": "order"}),  # NOT_FOUND: deleted just before
            ("DELETE", 6, {"resource": "service"}),
            ("DELETE", 6, {"resource": "service"}),  # NOT_FOUND likewise
            mode=mode,
        ),
        request(
            "custom",
            ("POST", 15, {"text": "first line"}),
            ("POST", 15, {"text": "second line"}),  # appended below the first
            handler="append_order_note",
            mode=mode,
        ),
    ]


async def marketplace(database_url: str) -> dict[str, list[str]]:
    """Every row of every marketplace table as PostgreSQL renders it, with the transaction that
    wrote its visible version (xmin): a write committed and then undone would show there."""
    return {
        table: [
            row
            for (row,) in await fetch(
                database_url,
                text(f"SELECT t.xmin::text || ' ' || t::text FROM {table} t ORDER BY 1"),
            )
        ]
        for table in MARKETPLACE
    }


def as_a_run_says_it(completion: BatchCompleted) -> list[tuple[Any, ...]]:
    """What each result says, without what differs between two runs (ids, times)."""
    return [
        (
            r.index,
            r.resource_id,
            r.outcome.value,
            r.status,
            (r.error.code.value, r.error.message) if r.error else None,
            {k: v for k, v in (r.data or {}).items() if not k.endswith("_at")},
        )
        for r in completion.results
    ]


async def run(settings: Settings, events: EventLog, *requests: BatchRequest) -> None:
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        for r in requests:
            await publisher.publish(r)
    for r in requests:
        await events.completion(r.batch_id)


@pytest.mark.usefixtures("service")
class TestDryRunChangesNothing:
    @pytest.mark.parametrize("mode", list(Mode))
    async def test_every_marketplace_table_is_byte_for_byte_unchanged_and_a_real_run_says_the_same(
        self, settings: Settings, events: EventLog, mode: Mode
    ) -> None:
        dry = [r.model_copy(update={"dry_run": True}) for r in rehearsals(mode)]
        before = await marketplace(settings.database_url)

        await run(settings, events, *dry)

        assert await marketplace(settings.database_url) == before
        real = [r.model_copy(update={"batch_id": uuid.uuid4(), "dry_run": False}) for r in dry]
        await run(settings, events, *real)
        assert await marketplace(settings.database_url) != before, "the real runs change things"
        for rehearsal, actual in zip(dry, real, strict=True):
            rehearsed = await events.completion(rehearsal.batch_id)
            done = await events.completion(actual.batch_id)
            assert as_a_run_says_it(rehearsed) == as_a_run_says_it(done), (
                f"the dry run of {rehearsal.operation_type.value} ({mode.value}) must say what "
                "the real run then did"
            )
            assert (rehearsed.status, rehearsed.dry_run, done.dry_run) == (done.status, True, False)

    async def test_the_rehearsal_sees_earlier_effects_and_fails_where_only_they_explain_it(
        self, settings: Settings, events: EventLog
    ) -> None:
        order_update, *_, users, deletes, notes = rehearsals(Mode.CONTINUE)
        dry = [
            r.model_copy(update={"dry_run": True}) for r in (order_update, users, deletes, notes)
        ]

        await run(settings, events, *dry)

        shown = [
            [r.outcome.value for r in (await events.completion(r.batch_id)).results] for r in dry
        ]
        assert shown == [
            ["succeeded"] * 4 + ["failed", "succeeded"],
            ["succeeded", "failed", "succeeded", "succeeded"],
            ["succeeded", "failed", "succeeded", "failed"],
            ["succeeded", "succeeded"],
        ]
        appended = (await events.completion(dry[3].batch_id)).results[1].data
        assert appended is not None
        assert appended["notes"] == "first line\nsecond line"


@pytest.mark.usefixtures("service")
class TestDryRunEvents:
    async def test_only_a_dryrun_completion_is_published_and_the_batch_is_stored_as_a_dry_run(
        self, settings: Settings, events: EventLog
    ) -> None:
        dry = [r.model_copy(update={"dry_run": True}) for r in rehearsals(Mode.STOP_ON_ERROR)]

        await run(settings, events, *dry)

        for r in dry:
            keys = [k for k, e in events.received if getattr(e, "batch_id", None) == r.batch_id]
            completion = await events.completion(r.batch_id)
            assert keys == [f"dryrun.{r.operation_type.value}.{completion.status.value}"], keys
            stored = await batch_row(settings.database_url, r.batch_id)
            assert stored is not None
            assert stored.dry_run is True
        outbox = await fetch(settings.database_url, text("SELECT routing_key FROM outbox"))
        assert {key.split(".")[0] for (key,) in outbox} == {"dryrun"}, (
            "no operation.* or batch.* event is even written"
        )

    async def test_a_dry_run_answers_its_reply_to_with_its_completion(
        self, settings: Settings, events: EventLog
    ) -> None:
        dry = rehearsals(Mode.ATOMIC)[0].model_copy(update={"dry_run": True})
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            reply = await publisher.publish_and_wait(dry, timeout=20)

        assert isinstance(reply, BatchCompleted)
        assert (reply.batch_id, reply.dry_run, reply.status.value) == (dry.batch_id, True, "failed")
        assert [r.outcome.value for r in reply.results] == ["skipped"] * 4 + ["failed", "skipped"]

    async def test_an_invalid_dry_run_is_rejected_like_any_other_request(
        self, settings: Settings, events: EventLog
    ) -> None:
        body = {
            **json.loads(rehearsals(Mode.CONTINUE)[0].model_dump_json()),
            "dry_run": True,
            "mode": "rehearse",
        }

        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )

        key, rejection = await events.rejection()
        assert isinstance(rejection, BatchRejected)
        assert key == "batch.order_update.rejected"
        assert [e.loc for e in rejection.errors] == [["mode"]]


class TestDryRunCancelled:
    @pytest.mark.usefixtures("service")
    async def test_a_dry_run_cancelled_mid_rehearsal_ends_cancelled_and_publishes_only_that(
        self, settings: Settings, events: EventLog
    ) -> None:
        dry = rehearsals(Mode.CONTINUE)[0].model_copy(update={"dry_run": True})
        before = await marketplace(settings.database_url)
        database = ScenarioDatabase(settings.database_url)
        control = bootstrap(settings, consume=False)
        try:
            async with database.holding("SELECT 1 FROM orders WHERE id = 6 FOR UPDATE") as lock:
                await run_without_waiting(settings, dry)
                await database.wait_until_blocked(lock)  # rehearsing operation 4

                assert await control.job_control.cancel(dry.batch_id, None) is Verdict.ACCEPTED
        finally:
            await control.close()
            await database.dispose()

        completion = await events.completion(dry.batch_id)
        assert (completion.status.value, completion.dry_run) == ("cancelled", True)
        assert all(
            r.error is not None and "cancelled" in r.error.message for r in completion.results
        ), "a rehearsal keeps nothing: every operation is reported not run"
        assert [k for k, e in events.received if getattr(e, "batch_id", None) == dry.batch_id] == [
            "dryrun.order_update.cancelled"
        ]
        assert await marketplace(settings.database_url) == before


async def run_without_waiting(settings: Settings, request: BatchRequest) -> None:
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await publisher.publish(request)
