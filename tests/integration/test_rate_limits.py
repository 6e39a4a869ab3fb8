"""Rate limits of the HTTP API per token's user (docs/contract.md, "Rate limits"), on the real
database and broker: N requests pass, the next is 429 with Retry-After and does nothing, and
once the window has moved on requests pass again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aio_pika
import httpx
import pytest

from consumer.adapters.database import create_engine
from consumer.bootstrap import bootstrap
from consumer.config import Settings
from consumer.entrypoints.http.app import ApiContext, create_app
from consumer.entrypoints.http.rate_limits import RateLimits
from publisher import BatchPublisher
from tests.integration.conftest import API, CLIENT_3, CLIENT_4, auth
from tests.integration.helpers import batch_row, count_batches, eventually, patch

PROBLEM = "application/problem+json"
OFF = "0"
LimitedClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def limited(settings: Settings) -> LimitedClient:
    """A client of the API with the given limits (like the `client` fixture otherwise)."""

    @asynccontextmanager
    async def client(*, submit: str = OFF, read: str = OFF) -> AsyncIterator[httpx.AsyncClient]:
        engine = create_engine(settings.database_url, pool_size=2)
        wired = bootstrap(settings, consume=False)
        app = create_app(
            ApiContext(
                engine=engine,
                publisher=BatchPublisher(settings.amqp_url, namespace=settings.namespace),
                max_body_bytes=settings.max_body_bytes,
                readiness={},
                job_control=wired.job_control,
                rate_limits=RateLimits(submit=submit, read=read),
            )
        )
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    yield http
        finally:
            await wired.close()
            await engine.dispose()

    return client


def submission(notes: str = "limited") -> dict[str, object]:
    return {
        "batch_id": str(uuid.uuid4()),
        "operation_type": "order_update",
        "operations": [patch(3, notes=notes)],
    }


def assert_limited(response: httpx.Response, budget: str) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 429
    assert f"over the {budget} rate limit" in response.json()["detail"]
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def queued(settings: Settings) -> int:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.topology.requests_queue, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


class TestTheWindow:
    async def test_exactly_n_pass_the_next_waits_retry_after_and_then_one_passes_again(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        stats = f"{API}/stats/"
        async with limited(read="3/2 seconds") as client:
            passed = [await client.get(stats, headers=auth(tokens[CLIENT_3])) for _ in range(3)]
            refused = await client.get(stats, headers=auth(tokens[CLIENT_3]))

            assert [r.status_code for r in passed] == [200, 200, 200]
            assert assert_limited(refused, "read") <= 2, "a slot frees within the 2 s window"

            async def passes_again() -> bool:
                answer = await client.get(stats, headers=auth(tokens[CLIENT_3]))
                return answer.status_code == 200

            await eventually(passes_again, timeout=5, what="a request after the window")

    async def test_each_user_has_a_budget_of_its_own(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        async with limited(read="1/minute") as client:
            first = await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))
            again = await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))
            other = await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_4]))

        assert first.status_code == 200
        assert 1 <= assert_limited(again, "read") <= 60
        assert other.status_code == 200


class TestBudgets:
    async def test_reads_do_not_spend_the_submit_budget_nor_submissions_the_read_budget(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        headers = auth(tokens[CLIENT_3])
        async with limited(submit="1/minute", read="2/minute") as client:
            reads = [await client.get(f"{API}/history/", headers=headers) for _ in range(2)]
            submitted = await client.post(f"{API}/", json=submission(), headers=headers)
            batch_id = submitted.json()["batch_id"]
            cancel = await client.post(f"{API}/{batch_id}/cancel", headers=headers)
            retry = await client.post(f"{API}/{batch_id}/retry", headers=headers)
            read = await client.get(f"{API}/{batch_id}/", headers=headers)

        assert [r.status_code for r in reads] == [200, 200]
        assert submitted.status_code == 202, submitted.text
        assert_limited(cancel, "submit")
        assert_limited(retry, "submit")
        assert_limited(read, "read")

    async def test_a_submission_over_the_limit_stores_and_publishes_nothing(
        self, limited: LimitedClient, tokens: dict[int, str], settings: Settings
    ) -> None:
        headers = auth(tokens[CLIENT_3])
        first, second = submission("first"), submission("second")
        async with limited(submit="1/minute") as client:
            accepted = await client.post(f"{API}/", json=first, headers=headers)
            refused = await client.post(f"{API}/", json=second, headers=headers)

        assert accepted.status_code == 202, accepted.text
        assert_limited(refused, "submit")
        assert await batch_row(settings.database_url, second["batch_id"]) is None
        assert await count_batches(settings.database_url) == 1
        assert await queued(settings) == 1, "only the first request was published"

    async def test_zero_turns_a_limit_off(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        async with limited(submit="1/minute", read=OFF) as client:
            answers = [
                await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3])) for _ in range(30)
            ]

        assert {a.status_code for a in answers} == {200}


class TestWhatIsNotLimited:
    async def test_a_request_without_a_valid_token_is_refused_401_and_spends_nothing(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        async with limited(read="1/minute") as client:
            strangers = [
                await client.get(f"{API}/stats/", headers=auth("bo_nope")) for _ in range(3)
            ]
            anonymous = await client.get(f"{API}/stats/")
            owner = await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))

        assert [s.status_code for s in strangers] == [401, 401, 401]
        assert anonymous.status_code == 401
        assert owner.status_code == 200

    async def test_probes_metrics_and_docs_are_never_limited(
        self, limited: LimitedClient, tokens: dict[int, str]
    ) -> None:
        async with limited(submit="1/minute", read="1/minute") as client:
            await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))
            answers = [
                await client.get(path, headers=auth(tokens[CLIENT_3]))
                for path in ("/healthz", "/metrics", "/openapi.json", "/docs") * 3
            ]

        assert {a.status_code for a in answers} == {200}
