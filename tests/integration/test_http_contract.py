"""The HTTP API keeps docs/contract.md to the letter: pending before publish, 409/422/503 and
problem+json for every error, empty parameters as absent, both slash forms, rejected batches
on record, and never a 500 for input."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI

from consumer.adapters.database import create_engine
from consumer.config import Settings
from consumer.entrypoints.http.app import ApiContext, create_app
from contracts import BatchStatus
from publisher import BatchPublisher
from tests.integration.conftest import ADMIN, API, CLIENT_3, CLIENT_4, PRO_6, auth
from tests.integration.helpers import batch, batch_row, patch, publish_raw
from tests.support import EventLog

PROBLEM = "application/problem+json"


def a_submission(**fields: Any) -> dict[str, Any]:
    return {"operation_type": "order_update", "operations": [patch(3, notes="n")], **fields}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def serve(context: ApiContext) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(context)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://batchops.test") as c:
            yield c


class TestSubmissionIsStoredBeforePublishing:
    async def test_the_location_answers_at_once_with_a_pending_batch(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        # No consumer runs: the batch exists only because the API stored it.
        response = await client.post(f"{API}/", json=a_submission(), headers=auth(tokens[PRO_6]))

        assert response.status_code == 202, response.text
        detail = await client.get(response.headers["location"], headers=auth(tokens[PRO_6]))
        assert detail.status_code == 200, detail.text
        assert detail.json()["status"] == BatchStatus.PENDING
        assert detail.json()["actor_id"] == PRO_6

    @pytest.mark.usefixtures("service")
    async def test_the_consumer_takes_the_pending_batch_and_runs_it(
        self, events: EventLog, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        batch_id = uuid.uuid4()
        response = await client.post(
            f"{API}/", json=a_submission(batch_id=str(batch_id)), headers=auth(tokens[CLIENT_3])
        )
        assert response.status_code == 202, response.text

        completion = await events.completion(batch_id)

        assert completion.status is BatchStatus.COMPLETED
        detail = (await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_3]))).json()
        assert (detail["status"], detail["completed_operations"]) == ("completed", 1)

    async def test_a_batch_id_re_used_with_another_body_is_409(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        batch_id = str(uuid.uuid4())
        first = await client.post(
            f"{API}/", json=a_submission(batch_id=batch_id), headers=auth(tokens[PRO_6])
        )
        again = await client.post(
            f"{API}/", json=a_submission(batch_id=batch_id), headers=auth(tokens[PRO_6])
        )
        other = await client.post(
            f"{API}/",
            json=a_submission(batch_id=batch_id, mode="atomic"),
            headers=auth(tokens[PRO_6]),
        )

        assert (first.status_code, again.status_code) == (202, 202)
        assert batch_id in assert_problem(other, 409)["detail"]

    async def test_more_operations_than_the_configured_maximum_are_422(
        self, settings: Settings, tokens: dict[int, str]
    ) -> None:
        engine = create_engine(settings.database_url, pool_size=1)
        context = ApiContext(
            engine=engine,
            publisher=BatchPublisher(settings.amqp_url, namespace=settings.namespace),
            max_body_bytes=settings.max_body_bytes,
            readiness={},
            max_operations=1,
        )
        try:
            async for client in serve(context):
                body = a_submission(operations=[patch(3, notes="a"), patch(6, notes="b")])
                response = await client.post(f"{API}/", json=body, headers=auth(tokens[PRO_6]))
                problem = assert_problem(response, 422)
                assert problem["errors"][0]["type"] == "too_many_operations"
                history = await client.get(f"{API}/history", headers=auth(tokens[PRO_6]))
                assert history.json()["count"] == 0, "nothing is stored for a refused batch"
        finally:
            await engine.dispose()

    async def test_a_broker_that_does_not_confirm_is_503_and_the_batch_is_forgotten(
        self, settings: Settings, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        # A full queue that refuses publishes makes the broker nack every request.
        connection = await aio_pika.connect_robust(settings.amqp_url)
        try:
            channel = await connection.channel()
            full = await channel.declare_queue(
                f"{settings.namespace}.full",
                exclusive=True,
                arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
            )
            await full.bind(settings.topology.requests_exchange, routing_key="#")
            batch_id = uuid.uuid4()
            response = await client.post(
                f"{API}/", json=a_submission(batch_id=str(batch_id)), headers=auth(tokens[PRO_6])
            )
        finally:
            await connection.close()

        assert_problem(response, 503)
        assert await batch_row(settings.database_url, batch_id) is None


class TestErrorsAreProblems:
    async def test_an_unreachable_database_is_503_problem(
        self, settings: Settings, tokens: dict[int, str]
    ) -> None:
        engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", pool_size=1)
        context = ApiContext(
            engine=engine,
            publisher=BatchPublisher(settings.amqp_url, namespace=settings.namespace),
            max_body_bytes=settings.max_body_bytes,
            readiness={},
        )
        try:
            async for client in serve(context):
                for response in (
                    await client.get(f"{API}/history/", headers=auth(tokens[PRO_6])),
                    await client.post(f"{API}/", json=a_submission(), headers=auth(tokens[PRO_6])),
                ):
                    assert_problem(response, 503)
        finally:
            await engine.dispose()

    async def test_an_unexpected_error_is_a_500_problem_that_hides_its_cause(
        self, settings: Settings
    ) -> None:
        def broken() -> bool:
            raise KeyError("secret-internal-detail")

        engine = create_engine(settings.database_url, pool_size=1)
        context = ApiContext(
            engine=engine,
            publisher=BatchPublisher(settings.amqp_url, namespace=settings.namespace),
            max_body_bytes=settings.max_body_bytes,
            readiness={"broken": broken},
        )
        try:
            async for client in serve(context):
                problem = assert_problem(await client.get("/readyz"), 500)
                assert "secret" not in json.dumps(problem)
        finally:
            await engine.dispose()

    @pytest.mark.parametrize(
        ("method", "url", "body"),
        [
            ("GET", f"{API}/history/?operation_type=%00", None),
            ("GET", f"{API}/history/?status=completed&operation_type=a%00b", None),
            ("GET", f"{API}/%00/", None),
            ("GET", f"{API}/{uuid.uuid4()}/results?format=%00", None),
            ("POST", f"{API}/", a_submission(operations=[patch(3, notes="a\x00b")])),
            ("POST", f"{API}/", a_submission(handler="x\x00")),
            ("POST", f"{API}/", a_submission(batch_id="\x00")),
        ],
        ids=["query", "second-query", "path", "results-query", "data", "handler", "batch-id"],
    )
    async def test_a_nul_character_anywhere_is_a_422_problem(
        self,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
        method: str,
        url: str,
        body: dict[str, Any] | None,
    ) -> None:
        response = await client.request(method, url, json=body, headers=auth(tokens[PRO_6]))
        assert_problem(response, 422)


class TestUrlsAsDocumented:
    async def test_empty_query_parameters_mean_the_same_as_absent_ones(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        await client.post(f"{API}/", json=a_submission(), headers=auth(tokens[PRO_6]))

        empty = await client.get(
            f"{API}/history/?limit=&offset=&status=&operation_type=", headers=auth(tokens[PRO_6])
        )
        absent = await client.get(f"{API}/history/", headers=auth(tokens[PRO_6]))

        assert empty.status_code == 200, empty.text
        assert empty.json() == absent.json()
        assert empty.json()["count"] == 1

    async def test_every_path_answers_with_and_without_its_trailing_slash(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        posted = await client.post(f"{API}", json=a_submission(), headers=auth(tokens[PRO_6]))
        assert posted.status_code == 202, posted.text
        batch_id = posted.json()["batch_id"]
        paths = [
            f"{API}/history/",
            f"{API}/stats/",
            f"{API}/{batch_id}/",
            f"{API}/{batch_id}/results",
            "/healthz",
            "/readyz",
            "/metrics",
        ]
        for path in paths:
            other = path.removesuffix("/") if path.endswith("/") else f"{path}/"
            for form in (path, other):
                response = await client.get(form, headers=auth(tokens[PRO_6]))
                assert response.status_code == 200, (form, response.status_code, response.text)


class TestRejectedBatchesAreOnRecord:
    @pytest.mark.usefixtures("service")
    async def test_a_rejected_request_shows_in_detail_history_and_stats(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        body = batch(CLIENT_3, patch(3, notes="n"), mode="sometimes")
        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )
        _, rejection = await events.rejection()
        batch_id = body["batch_id"]
        assert str(rejection.batch_id) == batch_id

        detail = (await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_3]))).json()
        history = (
            await client.get(
                f"{API}/history/", params={"status": "rejected"}, headers=auth(tokens[CLIENT_3])
            )
        ).json()
        stats = (await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))).json()
        stranger = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_4]))
        back_office = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[ADMIN]))

        assert (detail["status"], detail["code"]) == ("rejected", "VALIDATION_ERROR")
        assert detail["errors"] == [e.model_dump() for e in rejection.errors]
        assert detail["total_operations"] == 0
        assert [r["batch_id"] for r in history["results"]] == [batch_id]
        assert stats["by_status"] == {"rejected": 1}
        assert stranger.status_code == 404
        assert back_office.status_code == 200
