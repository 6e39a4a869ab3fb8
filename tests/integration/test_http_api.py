"""The HTTP API (docs/contract.md, "HTTP API") against the real database and broker, through
httpx."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime

import httpx
import pytest

from consumer.adapters.database import create_engine
from consumer.adapters.tokens import revoke_token
from consumer.config import Settings
from contracts import BatchRequest, BatchStatus
from publisher import BatchPublisher
from tests.integration.conftest import ADMIN, API, CLIENT_3, CLIENT_4, PRO_6, STAFF, auth
from tests.integration.helpers import batch, patch
from tests.support import EventLog


async def run_batch(settings: Settings, events: EventLog, body: dict[str, object]) -> uuid.UUID:
    request = BatchRequest.model_validate_json(json.dumps(body))
    async with BatchPublisher(settings.amqp_url, namespace=settings.namespace) as publisher:
        await publisher.publish(request)
    await events.completion(request.batch_id)
    return request.batch_id


@pytest.mark.usefixtures("service")
class TestBatchDetail:
    async def test_the_owner_sees_counters_rates_results_and_english_labels(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        batch_id = await run_batch(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed")),
        )

        response = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[PRO_6]))

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "partial"
        assert body["status_display"] == "Partially completed"
        assert body["operation_type_display"] == "Order update"
        assert (body["success_rate"], body["progress"]) == (50.0, 100.0)
        assert [r["status"] for r in body["results"]] == [200, 409]
        assert body["duration_seconds"] >= 0

    async def test_labels_follow_accept_language_and_results_filter_by_outcome(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        batch_id = await run_batch(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed")),
        )

        response = await client.get(
            f"{API}/{batch_id}/",
            params={"status": "failed"},
            headers={**auth(tokens[PRO_6]), "Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"},
        )

        body = response.json()
        assert body["status_display"] == "Parcialmente concluído"
        assert body["operation_type_display"] == "Atualização de pedido"
        assert [r["index"] for r in body["results"]] == [1]

    async def test_back_office_sees_any_batch_and_a_stranger_gets_404(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        batch_id = await run_batch(settings, events, batch(PRO_6, patch(3, notes="n")))

        for user in (ADMIN, STAFF):
            seen = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[user]))
            assert seen.status_code == 200, (user, seen.text)
        stranger = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_4]))
        assert stranger.status_code == 404
        assert stranger.headers["content-type"] == "application/problem+json"
        missing = await client.get(f"{API}/{uuid.uuid4()}/", headers=auth(tokens[PRO_6]))
        assert missing.json()["detail"] == stranger.json()["detail"].replace(
            str(batch_id), missing.json()["detail"].split()[1]
        )

    async def test_results_export_as_json_and_csv(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        batch_id = await run_batch(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed")),
        )

        as_json = await client.get(f"{API}/{batch_id}/results", headers=auth(tokens[PRO_6]))
        as_csv = await client.get(
            f"{API}/{batch_id}/results", params={"format": "csv"}, headers=auth(tokens[PRO_6])
        )

        assert [r["outcome"] for r in as_json.json()] == ["succeeded", "failed"]
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [(r["index"], r["outcome"], r["error_code"]) for r in rows] == [
            ("0", "succeeded", ""),
            ("1", "failed", "CONFLICT"),
        ]
        # The same columns as the console's download, the JSON's fields flattened.
        assert list(rows[0]) == [
            "index",
            "resource_id",
            "outcome",
            "status",
            "error_code",
            "error_message",
            "data",
            "occurred_at",
        ]
        assert json.loads(rows[0]["data"]) == as_json.json()[0]["data"]
        assert as_json.json()[1].get("data") is None
        assert rows[1]["data"] == ""
        assert [r["occurred_at"] for r in rows] == [
            datetime.fromisoformat(r["occurred_at"]).isoformat() for r in as_json.json()
        ]


@pytest.mark.usefixtures("service")
class TestHistoryAndStats:
    async def test_history_is_newest_first_paginated_filtered_and_scoped_to_the_caller(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        mine = [
            await run_batch(settings, events, batch(PRO_6, patch(3 * k, notes=f"n{k}")))
            for k in (1, 2, 3)
        ]
        failed = await run_batch(settings, events, batch(PRO_6, patch(9, status="completed")))
        await run_batch(settings, events, batch(CLIENT_4, patch(1, notes="theirs")))

        page = (
            await client.get(f"{API}/history/", params={"limit": 2}, headers=auth(tokens[PRO_6]))
        ).json()
        assert (page["count"], page["limit"], page["offset"]) == (4, 2, 0)
        assert [r["batch_id"] for r in page["results"]] == [str(failed), str(mine[2])]
        last = (
            await client.get(
                f"{API}/history/", params={"limit": 2, "offset": 3}, headers=auth(tokens[PRO_6])
            )
        ).json()
        assert [r["batch_id"] for r in last["results"]] == [str(mine[0])]
        beyond = (
            await client.get(f"{API}/history/", params={"offset": 50}, headers=auth(tokens[PRO_6]))
        ).json()
        assert (beyond["count"], beyond["results"]) == (4, [])
        only_failed = (
            await client.get(
                f"{API}/history/", params={"status": "failed"}, headers=auth(tokens[PRO_6])
            )
        ).json()
        assert [r["batch_id"] for r in only_failed["results"]] == [str(failed)]
        by_type = (
            await client.get(
                f"{API}/history/",
                params={"operation_type": "user_update"},
                headers=auth(tokens[PRO_6]),
            )
        ).json()
        assert by_type["count"] == 0
        everyone = (await client.get(f"{API}/history/", headers=auth(tokens[ADMIN]))).json()
        assert everyone["count"] == 5

    @pytest.mark.parametrize(
        "params", [{"limit": 101}, {"limit": 0}, {"offset": -1}, {"status": "nope"}]
    )
    async def test_out_of_range_parameters_are_422_problems(
        self, client: httpx.AsyncClient, tokens: dict[int, str], params: dict[str, int | str]
    ) -> None:
        response = await client.get(f"{API}/history/", params=params, headers=auth(tokens[PRO_6]))
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 422

    async def test_stats_total_the_callers_batches(
        self,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await run_batch(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed")),
        )
        await run_batch(settings, events, batch(PRO_6, patch(6, notes="x")))

        stats = (await client.get(f"{API}/stats/", headers=auth(tokens[PRO_6]))).json()

        assert stats == {
            "total_batches": 2,
            "total_operations": 3,
            "succeeded_operations": 2,
            "success_rate": 66.67,
            "by_status": {"partial": 1, "completed": 1},
            "by_operation_type": {"order_update": 2},
        }


class TestAuthentication:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer bo_not-a-real-token"},
            {"Authorization": "Basic Zm9vOmJhcg=="},
        ],
        ids=["missing", "unknown", "wrong-scheme"],
    )
    async def test_requests_without_a_live_token_get_401_problem(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await client.get(f"{API}/stats/", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_a_revoked_token_stops_working(
        self, settings: Settings, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        assert (
            await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))
        ).status_code == 200
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                assert await revoke_token(conn, tokens[CLIENT_3])
        finally:
            await engine.dispose()
        assert (
            await client.get(f"{API}/stats/", headers=auth(tokens[CLIENT_3]))
        ).status_code == 401


class TestSubmission:
    @pytest.mark.usefixtures("service")
    async def test_a_batch_posted_with_wait_returns_its_completion(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        body = {"operation_type": "order_update", "operations": [patch(3, status="accepted")]}

        response = await client.post(
            f"{API}/", params={"wait": 20}, json=body, headers=auth(tokens[PRO_6])
        )

        assert response.status_code == 200, response.text
        completion = response.json()
        assert completion["status"] == BatchStatus.COMPLETED
        assert response.headers["location"] == f"{API}/{completion['batch_id']}/"

    @pytest.mark.usefixtures("service")
    async def test_a_batch_posted_without_wait_is_accepted_with_its_location(
        self, events: EventLog, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        batch_id = uuid.uuid4()
        body = {
            "batch_id": str(batch_id),
            "operation_type": "order_update",
            "operations": [patch(3, notes="via http")],
        }

        response = await client.post(f"{API}/", json=body, headers=auth(tokens[CLIENT_3]))

        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"{API}/{batch_id}/"
        completion = await events.completion(batch_id)
        assert completion.status is BatchStatus.COMPLETED
        detail = await client.get(f"{API}/{batch_id}/", headers=auth(tokens[CLIENT_3]))
        assert detail.json()["actor_id"] == CLIENT_3

    async def test_when_nothing_consumes_wait_times_out_into_202(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        body = {"operation_type": "order_update", "operations": [patch(3, notes="n")]}
        response = await client.post(
            f"{API}/", params={"wait": 1}, json=body, headers=auth(tokens[PRO_6])
        )
        assert response.status_code == 202

    @pytest.mark.parametrize(
        ("content", "status"),
        [
            (b"{not json", 400),
            (json.dumps({"operation_type": "order_update", "operations": []}).encode(), 422),
            (
                json.dumps(
                    {
                        "operation_type": "order_update",
                        "actor_id": 1,
                        "operations": [patch(3, notes="n")],
                    }
                ).encode(),
                422,
            ),
            (
                json.dumps(
                    {"operation_type": "custom", "operations": [patch(3, notes="n")]}
                ).encode(),
                422,
            ),
            (b'{"pad": "' + b"x" * (300 * 1024) + b'"}', 413),
        ],
        ids=[
            "non-json",
            "no-operations",
            "actor-id-not-allowed",
            "custom-without-handler",
            "too-large",
        ],
    )
    async def test_invalid_bodies_get_problems_and_publish_nothing(
        self, client: httpx.AsyncClient, tokens: dict[int, str], content: bytes, status: int
    ) -> None:
        response = await client.post(
            f"{API}/",
            content=content,
            headers={**auth(tokens[PRO_6]), "Content-Type": "application/json"},
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status

    @pytest.mark.parametrize("wait", [31, -1])
    async def test_wait_is_bounded(
        self, client: httpx.AsyncClient, tokens: dict[int, str], wait: int
    ) -> None:
        body = {"operation_type": "order_update", "operations": [patch(3, notes="n")]}
        response = await client.post(
            f"{API}/", params={"wait": wait}, json=body, headers=auth(tokens[PRO_6])
        )
        assert response.status_code == 422


class TestProbes:
    async def test_healthz_and_readyz_answer(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": True, "broker": True}

    @pytest.mark.usefixtures("service")
    async def test_metrics_count_batches_operations_and_show_the_outbox_backlog(
        self, settings: Settings, events: EventLog, client: httpx.AsyncClient
    ) -> None:
        await run_batch(
            settings,
            events,
            batch(PRO_6, patch(3, status="accepted"), patch(9, status="completed")),
        )

        exposition = (await client.get("/metrics")).text

        assert (
            'batchops_batches_finished_total{operation_type="order_update",status="partial"}'
            in exposition
        )
        assert 'batchops_operations_total{code="CONFLICT",outcome="failed"}' in exposition
        assert "batchops_operation_duration_seconds_bucket" in exposition
        assert "batchops_batch_duration_seconds_count" in exposition
        assert "batchops_outbox_backlog " in exposition
        assert "batchops_outbox_oldest_unsent_age_seconds " in exposition
        assert 'batchops_events_relayed_total{result="published"}' in exposition
        assert "batchops_consumer_in_flight " in exposition
