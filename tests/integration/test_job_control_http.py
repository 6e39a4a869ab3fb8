"""Job control over HTTP (docs/contract.md, "Job control"): `POST /api/v1/batch/{id}/cancel`,
`POST /api/v1/batch/{id}/retry` and `POST /api/v1/batch/?dry_run=true`, against the real
database and broker, with the consumer running in this process where a batch must run."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.config import Settings
from contracts import BatchCompleted, BatchRequest
from publisher import BatchPublisher
from tests.faults.database import ScenarioDatabase
from tests.integration.conftest import ADMIN, API, CLIENT_3, CLIENT_4, PRO_6, STAFF, auth
from tests.integration.helpers import batch, batch_row, patch, publish_raw
from tests.integration.in_process import InProcessConsumer
from tests.support import EventLog

PROBLEM = "application/problem+json"
LOCK_ORDER = "SELECT 1 FROM orders WHERE id = :order_id FOR UPDATE"
# User 6 is the professional of orders 3, 6, 9, …; order 9 is pending, so `completed` is 409.
PARTIAL = (patch(3, status="accepted"), patch(9, status="completed"), patch(6, notes="kept"))


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[InProcessConsumer]:
    running = InProcessConsumer(settings)
    yield running
    await running.close()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[ScenarioDatabase]:
    """The test's own view of the database: queries and row locks that pin the consumer."""
    database = ScenarioDatabase(settings.database_url)
    yield database
    await database.dispose()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def run(settings: Settings, events: EventLog, body: dict[str, Any]) -> uuid.UUID:
    """Publish a request over AMQP and wait for its completion."""
    request = BatchRequest.model_validate_json(json.dumps(body))
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await publisher.publish(request)
    await events.completion(request.batch_id)
    return request.batch_id


async def stored(settings: Settings, batch_id: object) -> dict[str, Any]:
    row = await batch_row(settings.database_url, batch_id)
    assert row is not None, f"batch {batch_id} is not on record"
    return dict(row._mapping)


def cancelled_skips(results: list[dict[str, Any]]) -> list[bool]:
    return [r["outcome"] == "skipped" and "cancelled" in r["error"]["message"] for r in results]


async def cancel(
    client: httpx.AsyncClient, batch_id: object, user: int, tokens: dict[int, str]
) -> httpx.Response:
    return await client.post(f"{API}/{batch_id}/cancel", headers=auth(tokens[user]))


async def retry(
    client: httpx.AsyncClient, batch_id: object, user: int, tokens: dict[int, str]
) -> httpx.Response:
    return await client.post(f"{API}/{batch_id}/retry", headers=auth(tokens[user]))


class TestCancelOverHttp:
    async def test_a_pending_batch_is_answered_202_with_itself_already_cancelled(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        # No consumer runs: the batch exists only because the API stored it.
        operations = [patch(3, notes="n"), patch(6, notes="m")]
        submitted = await client.post(
            f"{API}/",
            json={"operation_type": "order_update", "operations": operations},
            headers=auth(tokens[PRO_6]),
        )
        batch_id = submitted.json()["batch_id"]

        answer = await cancel(client, batch_id, PRO_6, tokens)

        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["batch_id"], body["status"], body["status_display"]) == (
            batch_id,
            "cancelled",
            "Cancelled",
        )
        assert (body["skipped_operations"], body["progress"]) == (2, 100.0)
        assert cancelled_skips(body["results"]) == [True, True]
        detail = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[PRO_6]))
        assert detail.json()["status"] == "cancelled"

    @pytest.mark.usefixtures("service")
    async def test_a_running_batch_is_answered_202_as_it_is_and_stops_before_its_next_operation(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        db: ScenarioDatabase,
    ) -> None:
        body = batch(PRO_6, patch(3, notes="a"), patch(6, notes="b"), patch(9, notes="c"))
        async with db.holding(LOCK_ORDER, order_id=6) as lock:
            async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as p:
                await p.publish(BatchRequest.model_validate(body))
            await db.wait_for_results(uuid.UUID(body["batch_id"]), 1)
            await db.wait_until_blocked(lock)

            answer = await cancel(client, body["batch_id"], STAFF, tokens)

            assert answer.status_code == 202, answer.text
            now = answer.json()
            assert (now["status"], now["completed_operations"]) == ("processing", 1)
            assert now["cancel_requested_at"] is not None
        completion = await events.completion(uuid.UUID(body["batch_id"]))
        assert completion.status.value == "cancelled"
        assert [r.outcome.value for r in completion.results] == ["succeeded", "skipped", "skipped"]
        assert ("batch.order_update.cancelled", completion) in events.received

    async def test_a_stranger_gets_404_and_nothing_changes(
        self, client: httpx.AsyncClient, tokens: dict[int, str], settings: Settings
    ) -> None:
        submitted = await client.post(
            f"{API}/",
            json={"operation_type": "order_update", "operations": [patch(3, notes="n")]},
            headers=auth(tokens[PRO_6]),
        )
        batch_id = submitted.json()["batch_id"]
        before = await stored(settings, batch_id)

        for stranger in (CLIENT_4, CLIENT_3):
            assert_problem(await cancel(client, batch_id, stranger, tokens), 404)

        assert await stored(settings, batch_id) == before

    @pytest.mark.parametrize("user", [CLIENT_3, PRO_6], ids=["client", "professional"])
    async def test_an_unseen_id_is_404_for_clients_and_professionals(
        self, client: httpx.AsyncClient, tokens: dict[int, str], settings: Settings, user: int
    ) -> None:
        batch_id = uuid.uuid4()

        assert_problem(await cancel(client, batch_id, user, tokens), 404)

        assert await batch_row(settings.database_url, batch_id) is None

    @pytest.mark.parametrize("user", [ADMIN, STAFF], ids=["admin", "staff"])
    async def test_the_back_office_cancels_an_unseen_id_in_advance_and_its_request_runs_nothing(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        consumer: InProcessConsumer,
        db: ScenarioDatabase,
        user: int,
    ) -> None:
        body = batch(PRO_6, patch(3, status="accepted"), patch(6, notes="never"))

        answer = await cancel(client, body["batch_id"], user, tokens)
        assert answer.status_code == 202, answer.text
        assert answer.json()["batch_id"] == body["batch_id"]
        assert not [k for k in events.routing_keys() if k.startswith("batch.")], (
            "its completion is published when its request arrives"
        )
        await consumer.start()  # only now
        await run(settings, events, body)

        completion = await events.completion(uuid.UUID(body["batch_id"]))
        assert completion.status.value == "cancelled"
        assert cancelled_skips([r.model_dump(mode="json") for r in completion.results]) == [
            True,
            True,
        ]
        assert events.routing_keys().count("batch.order_update.cancelled") == 1
        order = await db.rows("SELECT status, notes FROM orders WHERE id IN (3, 6) ORDER BY id")
        assert [tuple(r) for r in order] == [("pending", ""), ("pending", "")]

    @pytest.mark.usefixtures("service")
    async def test_a_batch_cancelled_in_advance_and_then_submitted_over_http_ends_cancelled(
        self, events: EventLog, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        batch_id = str(uuid.uuid4())
        assert (await cancel(client, batch_id, ADMIN, tokens)).status_code == 202
        submission = {
            "batch_id": batch_id,
            "operation_type": "order_update",
            "operations": [patch(3, notes="never")],
        }

        answer = await client.post(f"{API}/", json=submission, headers=auth(tokens[PRO_6]))

        assert answer.status_code == 202, answer.text
        completion = await events.completion(uuid.UUID(batch_id))
        assert completion.status.value == "cancelled"

    @pytest.mark.usefixtures("service")
    async def test_a_finished_batch_is_409_and_nothing_changes(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        batch_id = await run(settings, events, batch(PRO_6, *PARTIAL))
        before = await stored(settings, batch_id)
        published = len(events.received)

        for user in (PRO_6, ADMIN):
            assert_problem(await cancel(client, batch_id, user, tokens), 409)

        assert await stored(settings, batch_id) == before
        assert len(events.received) == published

    @pytest.mark.parametrize("action", ["cancel", "retry"])
    async def test_job_control_answers_with_and_without_a_trailing_slash_and_needs_a_token(
        self, client: httpx.AsyncClient, tokens: dict[int, str], action: str
    ) -> None:
        unseen = uuid.uuid4()

        for path in (f"{API}/{unseen}/{action}", f"{API}/{unseen}/{action}/"):
            assert_problem(await client.post(path, headers=auth(tokens[PRO_6])), 404)
            assert_problem(await client.post(path), 401)


@pytest.mark.usefixtures("service")
class TestRetryOverHttp:
    async def test_a_partial_batch_is_retried_as_a_new_batch_of_exactly_what_did_not_succeed(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        original = await run(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed"),
                  patch(6, notes="kept"), patch(12, status="in_progress"), mode="continue"),
        )  # fmt: skip

        answer = await retry(client, original, PRO_6, tokens)

        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        new_id = uuid.UUID(accepted["batch_id"])
        assert new_id != original
        assert answer.headers["location"] == accepted["location"] == f"{API}/{new_id}/"
        completion = await events.completion(new_id)
        assert [(r.index, r.resource_id) for r in completion.results] == [(0, 9), (1, 12)]
        assert completion.retry_of == original
        assert all(r.retry_of == original for _, r in events.operations(new_id))
        assert len(events.operations(new_id)) == 2
        detail = await client.get(answer.headers["location"], headers=auth(tokens[PRO_6]))
        assert detail.json()["retry_of"] == str(original)
        request = (await stored(settings, new_id))["request"]
        assert (request["actor_id"], request["mode"], request["operation_type"]) == (
            PRO_6,
            "continue",
            "order_update",
        )
        assert request["operations"] == [
            patch(9, status="completed"),
            patch(12, status="in_progress"),
        ]

    async def test_the_back_office_retries_for_the_batch_owner_with_the_same_mode_and_handler(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        body = {
            **batch(CLIENT_3, mode="stop_on_error"),
            "operation_type": "custom",
            "handler": "append_order_note",
            "operations": [
                {"method": "POST", "resource_id": 3, "data": {"text": "mine"}},
                {"method": "POST", "resource_id": 4, "data": {"text": "not mine"}},
                {"method": "POST", "resource_id": 6, "data": {"text": "skipped"}},
            ],
        }
        original = await run(settings, events, body)

        answer = await retry(client, original, STAFF, tokens)

        assert answer.status_code == 202, answer.text
        new_id = uuid.UUID(answer.json()["batch_id"])
        completion = await events.completion(new_id)
        assert completion.operation_type == "custom"
        request = (await stored(settings, new_id))["request"]
        assert (request["actor_id"], request["mode"], request["handler"]) == (
            CLIENT_3,
            "stop_on_error",
            "append_order_note",
        )
        assert [op["resource_id"] for op in request["operations"]] == [4, 6]

    async def test_a_cancelled_batch_is_retried_with_every_operation_it_did_not_run(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        db: ScenarioDatabase,
    ) -> None:
        body = batch(PRO_6, patch(3, notes="a"), patch(6, notes="b"), patch(9, notes="c"))
        async with db.holding(LOCK_ORDER, order_id=6) as lock:
            async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as p:
                await p.publish(BatchRequest.model_validate(body))
            await db.wait_until_blocked(lock)
            assert (await cancel(client, body["batch_id"], PRO_6, tokens)).status_code == 202
        original = await events.completion(uuid.UUID(body["batch_id"]))
        assert original.status.value == "cancelled"

        answer = await retry(client, original.batch_id, PRO_6, tokens)

        assert answer.status_code == 202, answer.text
        completion = await events.completion(uuid.UUID(answer.json()["batch_id"]))
        assert [r.resource_id for r in completion.results] == [6, 9]
        assert completion.status.value == "completed"

    async def test_a_failed_batch_is_retried_whole(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        original = await run(settings, events, batch(PRO_6, patch(9, status="completed")))

        answer = await retry(client, original, PRO_6, tokens)

        assert answer.status_code == 202, answer.text
        completion = await events.completion(uuid.UUID(answer.json()["batch_id"]))
        assert [r.resource_id for r in completion.results] == [9]

    async def test_completed_rejected_unfinished_and_dry_run_batches_are_409(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        db: ScenarioDatabase,
    ) -> None:
        completed = await run(settings, events, batch(PRO_6, patch(3, notes="done")))
        dry_run = await run(settings, events, batch(PRO_6, *PARTIAL, dry_run=True))
        rejected = batch(PRO_6, patch(6, notes="x"), unknown=True)
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(rejected).encode()
        )
        await events.rejection()
        unfinished = batch(PRO_6, patch(12, notes="waits"))
        async with db.holding(LOCK_ORDER, order_id=12) as lock:
            async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as p:
                await p.publish(BatchRequest.model_validate(unfinished))
            await db.wait_until_blocked(lock)
            published = len(events.received)

            for batch_id in (completed, dry_run, rejected["batch_id"], unfinished["batch_id"]):
                assert_problem(await retry(client, batch_id, PRO_6, tokens), 409)

            assert len(events.received) == published, "a refused retry publishes nothing"
        rows = await db.rows("SELECT count(*) FROM batch_operations")
        assert rows[0][0] == 4, "a refused retry stores no batch"

    async def test_a_stranger_gets_404_and_the_back_office_may_retry_anyones(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        original = await run(settings, events, batch(PRO_6, *PARTIAL))

        assert_problem(await retry(client, original, CLIENT_4, tokens), 404)
        assert_problem(await retry(client, uuid.uuid4(), ADMIN, tokens), 404)
        answer = await retry(client, original, ADMIN, tokens)
        assert answer.status_code == 202, answer.text


class TestRetryShownAtOnce:
    async def test_the_location_of_a_retry_shows_retry_of_before_any_consumer_takes_it(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        consumer: InProcessConsumer,
    ) -> None:
        await consumer.start()
        original = await run(settings, events, batch(PRO_6, *PARTIAL))
        await consumer.close()  # nothing takes the retry

        answer = await retry(client, original, PRO_6, tokens)

        assert answer.status_code == 202, answer.text
        detail = await client.get(answer.headers["location"], headers=auth(tokens[PRO_6]))
        assert detail.status_code == 200, detail.text
        assert (detail.json()["status"], detail.json()["retry_of"]) == ("pending", str(original))


class TestDryRunOverHttp:
    @pytest.mark.usefixtures("service")
    async def test_a_dry_run_submitted_with_the_parameter_changes_nothing_and_shows_as_one(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        db: ScenarioDatabase,
    ) -> None:
        before = await db.rows("SELECT t::text FROM orders t ORDER BY id")
        submission = {"operation_type": "order_update", "operations": list(PARTIAL)}

        answer = await client.post(
            f"{API}/", params={"dry_run": "true"}, json=submission, headers=auth(tokens[PRO_6])
        )

        assert answer.status_code == 202, answer.text
        batch_id = uuid.UUID(answer.json()["batch_id"])
        completion = await events.completion(batch_id)
        assert completion.dry_run
        assert [k for k, e in events.received if getattr(e, "batch_id", None) == batch_id] == [
            "dryrun.order_update.partial"
        ]
        assert await db.rows("SELECT t::text FROM orders t ORDER BY id") == before
        detail = (await client.get(f"{API}/{batch_id}/", headers=auth(tokens[PRO_6]))).json()
        assert (detail["dry_run"], detail["status"]) == (True, "partial")
        assert [r["outcome"] for r in detail["results"]] == ["succeeded", "failed", "succeeded"]
        history = (await client.get(f"{API}/history/", headers=auth(tokens[PRO_6]))).json()
        assert [(r["batch_id"], r["dry_run"]) for r in history["results"]] == [
            (str(batch_id), True)
        ]

    @pytest.mark.usefixtures("service")
    async def test_a_dry_run_in_the_body_with_wait_answers_its_completion(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        submission = {
            "operation_type": "order_update",
            "operations": list(PARTIAL),
            "mode": "atomic",
            "dry_run": True,
        }

        answer = await client.post(
            f"{API}/", params={"wait": 20}, json=submission, headers=auth(tokens[PRO_6])
        )

        assert answer.status_code == 200, answer.text
        completion = BatchCompleted.model_validate(answer.json())
        assert (completion.dry_run, completion.status.value) == (True, "failed")
        assert [r.outcome.value for r in completion.results] == ["skipped", "failed", "skipped"]

    async def test_a_dry_run_is_shown_as_one_as_soon_as_it_is_submitted(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        submission = {"operation_type": "order_update", "operations": [patch(3, notes="n")]}

        answer = await client.post(
            f"{API}/", params={"dry_run": "true"}, json=submission, headers=auth(tokens[PRO_6])
        )

        detail = await client.get(answer.headers["location"], headers=auth(tokens[PRO_6]))
        assert (detail.json()["status"], detail.json()["dry_run"]) == ("pending", True)

    @pytest.mark.usefixtures("service")
    async def test_stats_leave_dry_runs_out(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await run(settings, events, batch(PRO_6, *PARTIAL))
        await run(settings, events, batch(PRO_6, patch(6, notes="x"), dry_run=True))
        await run(settings, events, batch(PRO_6, patch(9, status="accepted"), dry_run=True))

        stats = (await client.get(f"{API}/stats/", headers=auth(tokens[PRO_6]))).json()

        assert stats == {
            "total_batches": 1,
            "total_operations": 3,
            "succeeded_operations": 2,
            "success_rate": 66.67,
            "by_status": {"partial": 1},
            "by_operation_type": {"order_update": 1},
        }


@pytest.mark.usefixtures("service")
class TestJobControlMetrics:
    async def test_cancelled_batches_are_counted_by_status_and_dry_runs_apart(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        finished = "batchops_batches_finished_total"
        rehearsed = "batchops_dry_runs_finished_total"
        before = await metrics(client)
        cancelled = batch(PRO_6, patch(3, notes="never"))
        assert (await cancel(client, cancelled["batch_id"], ADMIN, tokens)).status_code == 202
        await run(settings, events, cancelled)
        await run(settings, events, batch(PRO_6, *PARTIAL, dry_run=True))

        after = await metrics(client)

        def grew(name: str, status: str) -> float:
            key = (name, status)
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert grew(finished, "cancelled") == 1
        assert grew(rehearsed, "partial") == 1
        assert grew(finished, "partial") == 0, "a dry run is not counted among batches"


async def metrics(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    """order_update batches and dry runs finished so far, by (metric, status)."""
    exposition = (await client.get("/metrics")).text
    return {
        (sample.name, sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.endswith("_finished_total")
        and sample.labels.get("operation_type") == "order_update"
    }
