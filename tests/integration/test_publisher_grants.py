"""Publisher grants through the real broker and consumer (docs/contract.md, "Publisher
grants"): the test publishes as the broker user `guest`, granted here only user 6; the HTTP
API publishes as `guest` too, and its batches pass whatever the grants say."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from structlog.testing import capture_logs

from consumer.config import Settings
from contracts import BatchRequest, BatchStatus, ErrorCode
from publisher import BatchPublisher
from tests.integration.conftest import API, CLIENT_3, PRO_6, auth
from tests.integration.helpers import (
    batch,
    batch_row,
    dead_letters,
    order,
    patch,
    publish_raw,
    result_rows,
)
from tests.integration.in_process import InProcessConsumer
from tests.support import EventLog

# `guest` may act for user 6 alone; another service may act for anyone.
GRANTS = json.dumps({"guest": {"actors": [PRO_6]}, "partner-svc": "*"})
# User 6 is the professional of orders 3, 6, 9, …; user 3 the client of orders 3, 6, 9, ….
NOTES = patch(3, notes="granted or not")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"publisher_grants": GRANTS})


@pytest.mark.usefixtures("service")
class TestOverAmqp:
    async def test_a_request_for_an_actor_not_granted_is_rejected_and_changes_nothing(
        self, settings: Settings, events: EventLog
    ) -> None:
        before = await order(settings.database_url, 3)
        body = batch(CLIENT_3, NOTES)

        await publish_raw(
            settings.amqp_url, settings.topology.requests_exchange, json.dumps(body).encode()
        )

        key, rejection = await events.rejection()
        assert key == "batch.order_update.rejected"
        assert rejection.code is ErrorCode.PERMISSION_DENIED
        assert [e.type for e in rejection.errors] == ["actor_not_granted"]
        assert "'guest' may not act for actor 3" in rejection.errors[0].msg
        assert await order(settings.database_url, 3) == before
        row = await batch_row(settings.database_url, body["batch_id"])
        assert row is not None
        assert (row.status, row.code, row.actor_id) == ("rejected", "PERMISSION_DENIED", 3)
        assert await result_rows(settings.database_url, body["batch_id"]) == []
        assert not events.operations(uuid.UUID(body["batch_id"])), "no operation event"
        dead = await dead_letters(settings.amqp_url, settings.topology.dead_letter_queue)
        assert [json.loads(d)["batch_id"] for d in dead] == [body["batch_id"]]

    async def test_a_request_for_the_granted_actor_runs(
        self, settings: Settings, events: EventLog
    ) -> None:
        request = BatchRequest.model_validate(batch(PRO_6, NOTES))
        async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
            await publisher.publish(request)

        completion = await events.completion(request.batch_id)
        assert completion.status is BatchStatus.COMPLETED
        assert (await order(settings.database_url, 3)).notes == "granted or not"


@pytest.mark.usefixtures("service")
class TestHttpApiBatches:
    """The API's broker user (`guest`) is granted user 6 only; its batches are the token's."""

    async def test_a_submission_for_an_actor_its_broker_user_is_not_granted_runs(
        self, client: httpx.AsyncClient, tokens: dict[int, str], settings: Settings
    ) -> None:
        body = {"operation_type": "order_update", "operations": [NOTES]}

        response = await client.post(
            f"{API}/", params={"wait": 20}, json=body, headers=auth(tokens[CLIENT_3])
        )

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"
        assert (await order(settings.database_url, 3)).notes == "granted or not"

    async def test_a_retry_over_http_runs_too(
        self, client: httpx.AsyncClient, tokens: dict[int, str], events: EventLog
    ) -> None:
        # Order 3 is pending: it cannot become completed (409), so the batch fails.
        body = {"operation_type": "order_update", "operations": [patch(3, status="completed")]}
        first = await client.post(
            f"{API}/", params={"wait": 20}, json=body, headers=auth(tokens[CLIENT_3])
        )
        assert first.json()["status"] == "failed", first.text

        answer = await client.post(
            f"{API}/{first.json()['batch_id']}/retry", headers=auth(tokens[CLIENT_3])
        )

        assert answer.status_code == 202, answer.text
        completion = await events.completion(uuid.UUID(answer.json()["batch_id"]))
        assert completion.status is BatchStatus.FAILED, "it ran (and failed again), not rejected"
        assert [r.error.code for r in completion.results if r.error] == [ErrorCode.CONFLICT]


class TestStartUpWarning:
    @pytest.mark.parametrize(
        ("grants", "warnings"), [(None, 1), ("{}", 0), (GRANTS, 0)], ids=["unset", "empty", "set"]
    )
    async def test_without_grants_the_consumer_says_once_that_anyone_may_act_for_anyone(
        self, settings: Settings, grants: str | None, warnings: int
    ) -> None:
        consumer = InProcessConsumer(settings.model_copy(update={"publisher_grants": grants}))
        with capture_logs() as logs:
            await consumer.start()
            await consumer.close()

        said = [line for line in logs if line["event"] == "publisher_grants_not_configured"]
        assert len(said) == warnings, said
        if said:
            assert said[0]["log_level"] == "warning"
            assert "BATCHOPS_PUBLISHER_GRANTS" in said[0]["detail"]
