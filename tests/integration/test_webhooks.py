"""Webhooks (docs/contract.md, Webhooks): a batch submitted over HTTP with a `callback_url` has
its completion POSTed there, signed, retried with backoff until a 2xx answer or the retry
budget's end; the batch's `webhook` field tells how it went. The receiver is a real HTTP
server on 127.0.0.1, so these tests allow private callbacks."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from consumer.adapters.database import create_engine
from consumer.adapters.webhooks import webhook_secret
from consumer.config import Settings
from contracts import BatchStatus
from tests.integration.conftest import API, CLIENT_3, auth
from tests.integration.helpers import batch_row, eventually, patch
from tests.integration.in_process import InProcessConsumer
from tests.receiver import HANG, REDIRECT, Receiver, signature_is_valid
from tests.support import EventLog

Start = Callable[..., Awaitable[None]]
TRIES = "batchops_webhook_tries_total"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"webhook_allow_private": True, "webhook_timeout_seconds": 1.0}
    )


@pytest.fixture
async def start_consumer(settings: Settings) -> AsyncIterator[Start]:
    """Start batchops (consumer, relay, webhook worker) with these settings changed."""
    started: list[InProcessConsumer] = []

    async def start(**overrides: Any) -> None:
        consumer = InProcessConsumer(settings.model_copy(update=overrides))
        started.append(consumer)
        await consumer.start()

    yield start
    for consumer in started:
        await consumer.close()


def tries_counted() -> Counter[str]:
    """`batchops_webhook_tries_total` of this process, by outcome."""
    return Counter(
        {
            outcome: int(value)
            for outcome in ("delivered", "failed", "given_up")
            if (value := REGISTRY.get_sample_value(TRIES, {"outcome": outcome}))
        }
    )


async def submit(client: httpx.AsyncClient, token: str, callback_url: str) -> uuid.UUID:
    batch_id = uuid.uuid4()
    body = {
        "batch_id": str(batch_id),
        "operation_type": "order_update",
        "operations": [patch(3, notes="webhook")],
        "callback_url": callback_url,
    }
    response = await client.post(f"{API}/", json=body, headers=auth(token))
    assert response.status_code == 202, response.text
    return batch_id


async def secret_of(settings: Settings, user_id: int) -> str:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await webhook_secret(conn, user_id)
    finally:
        await engine.dispose()


async def webhook_of(
    client: httpx.AsyncClient, token: str, batch_id: uuid.UUID, settled: str
) -> dict[str, Any]:
    """The batch's `webhook` once its `settled` field (delivered_at, given_up_at) is set."""
    shown: dict[str, Any] = {}

    async def settled_yet() -> bool:
        nonlocal shown
        detail = await client.get(f"{API}/{batch_id}/", headers=auth(token))
        shown = detail.json().get("webhook") or {}
        return shown.get(settled) is not None

    await eventually(settled_yet, timeout=30, what=f"webhook {settled}")
    return shown


class TestDelivery:
    async def test_the_completion_is_posted_with_its_event_id_and_a_valid_signature(
        self,
        settings: Settings,
        start_consumer: Start,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()
        async with Receiver() as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            completion = await events.completion(batch_id)
            (received,) = await receiver.wait_for(1)
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "delivered_at")

        stored = await batch_row(settings.database_url, batch_id)
        assert stored is not None
        assert received.body == stored.completion_event, "the completion event's own bytes"
        assert json.loads(received.body)["status"] == BatchStatus.COMPLETED
        assert received.headers["content-type"] == "application/json"
        assert received.headers["batchops-event-id"] == str(completion.event_id)
        assert received.path == "/hooks/batchops"
        assert signature_is_valid(await secret_of(settings, CLIENT_3), received)
        assert webhook["url"] == receiver.url
        assert webhook["attempts"] == 1
        assert webhook["last_status"] == 200

    async def test_a_batch_without_callback_url_shows_no_webhook_field(
        self,
        start_consumer: Start,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()
        batch_id = uuid.uuid4()
        body = {
            "batch_id": str(batch_id),
            "operation_type": "order_update",
            "operations": [patch(3, notes="no webhook")],
        }
        accepted = await client.post(f"{API}/", json=body, headers=auth(tokens[CLIENT_3]))
        assert accepted.status_code == 202, accepted.text
        await events.completion(batch_id)

        detail = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_3]))
        history = await client.get(f"{API}/history/", headers=auth(tokens[CLIENT_3]))

        assert "webhook" not in detail.json()
        assert all("webhook" not in item for item in history.json()["results"])

    async def test_the_history_shows_the_webhook_of_a_batch_that_has_one(
        self,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()
        async with Receiver() as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            await webhook_of(client, tokens[CLIENT_3], batch_id, "delivered_at")

        history = await client.get(f"{API}/history/", headers=auth(tokens[CLIENT_3]))
        (item,) = [i for i in history.json()["results"] if i["batch_id"] == str(batch_id)]
        assert item["webhook"]["attempts"] == 1
        assert item["webhook"]["last_status"] == 200


class TestRetries:
    async def test_500_answers_are_retried_with_backoff_until_a_2xx(
        self,
        settings: Settings,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()
        counted = tries_counted()
        async with Receiver([500, 503]) as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            tries = await receiver.wait_for(3, timeout=30)
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "delivered_at")

        assert tries_counted() - counted == Counter(failed=2, delivered=1)
        assert webhook["attempts"] == 3, "every try counts, the successful one included"
        assert webhook["last_status"] == 200
        assert len({t.body for t in tries}) == 1, "each try carries the same body"
        assert len({t.headers["batchops-event-id"] for t in tries}) == 1
        secret = await secret_of(settings, CLIENT_3)
        assert all(signature_is_valid(secret, t) for t in tries)

    async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(
        self,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()  # webhook_timeout_seconds=1
        async with Receiver([HANG]) as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            await receiver.wait_for(1)
            first_try = time.monotonic()
            await receiver.wait_for(2, timeout=30)
            retried_after = time.monotonic() - first_try
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "delivered_at")

        assert webhook["attempts"] == 2
        assert webhook["last_status"] == 200
        # The timeout (1 s) and the first retry's delay (1 s): well within the promised 5 s.
        assert 1.0 <= retried_after < 5.0, retried_after

    async def test_the_delivery_is_given_up_and_marked_once_the_retry_budget_is_spent(
        self,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer(webhook_retry_seconds=2.5)
        counted = tries_counted()
        async with Receiver(then=500) as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "given_up_at")
            tries = len(receiver.received)

        assert tries_counted() - counted == Counter(failed=tries - 1, given_up=1)

        # Tries at about 0 s and 1 s after the completion (the third, 2 s later, is past 2.5 s).
        assert webhook["delivered_at"] is None
        assert webhook["last_status"] == 500
        assert webhook["attempts"] == tries
        assert 2 <= tries <= 3, tries

    async def test_a_redirect_is_a_failed_try_and_is_not_followed(
        self,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await start_consumer()
        async with Receiver([REDIRECT]) as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "delivered_at")
            paths = [r.path for r in receiver.received]

        assert paths == ["/hooks/batchops", "/hooks/batchops"], "the Location was never asked"
        assert webhook["attempts"] == 2


class TestIsolation:
    async def test_a_receiver_that_never_answers_does_not_hold_back_events(
        self,
        start_consumer: Start,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        # One try at a time, each waiting up to a minute: the worker is stuck on the first.
        await start_consumer(webhook_timeout_seconds=60, webhook_concurrency=1)
        async with Receiver(then=HANG) as receiver:
            stuck = await submit(client, tokens[CLIENT_3], receiver.url)
            await receiver.wait_for(1)
            started = time.monotonic()
            later = [await submit(client, tokens[CLIENT_3], receiver.url) for _ in range(3)]
            for batch_id in later:
                await events.completion(batch_id, timeout=10)
            elapsed = time.monotonic() - started
            detail = await client.get(f"{API}/{stuck}/", headers=auth(tokens[CLIENT_3]))

            assert len(receiver.received) == 1, "the bound of one try at a time held"
        assert detail.json()["webhook"]["delivered_at"] is None
        assert elapsed < 10, f"the completions took {elapsed:.1f}s behind a stuck receiver"

    async def test_the_address_is_checked_again_before_each_try(
        self,
        start_consumer: Start,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        # The API let 127.0.0.1 in; the consumer refuses private addresses (as one would
        # after a DNS answer changed to a private one): no request leaves, the try fails.
        await start_consumer(webhook_allow_private=False, webhook_retry_seconds=0)
        async with Receiver() as receiver:
            batch_id = await submit(client, tokens[CLIENT_3], receiver.url)
            webhook = await webhook_of(client, tokens[CLIENT_3], batch_id, "given_up_at")

            assert receiver.received == []
        assert webhook["attempts"] == 1
        assert webhook["last_status"] is None
