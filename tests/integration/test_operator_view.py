"""What an operator sees of a running service besides its answers: metrics without empty
labels, one access-log line per request, log lines that name the message they are about, the
console's sign-in and CSRF protection over HTTP, and the API docs served from the package."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from sqlalchemy import insert
from structlog.testing import capture_logs

from consumer.adapters.tables import waiting_requests
from consumer.bootstrap import Service
from consumer.config import Settings
from tests.integration.conftest import ADMIN, API, CLIENT_3, PRO_6, auth
from tests.integration.helpers import batch, patch, publish_raw
from tests.integration.test_http_api import run_batch
from tests.support import EventLog, observer_engine


class TestMetrics:
    async def test_successes_rejections_http_and_queues_are_labelled_and_no_label_is_empty(
        self,
        service: Service,
        settings: Settings,
        events: EventLog,
        client: httpx.AsyncClient,
        tokens: dict[int, str],
    ) -> None:
        await run_batch(settings, events, batch(PRO_6, patch(3, status="accepted")))
        await publish_raw(settings.amqp_url, settings.topology.requests_exchange, b"not json")
        await events.rejection()
        await client.get(f"{API}/{uuid.uuid4()}/", headers=auth(tokens[PRO_6]))
        assert service.queue_watch is not None
        await service.queue_watch.read()

        exposition = (await client.get("/metrics")).text

        assert 'batchops_operations_total{code="OK",outcome="succeeded"}' in exposition
        assert (
            'batchops_batches_rejected_total{code="VALIDATION_ERROR",reason="json_invalid"}'
            in exposition
        )
        assert (
            'batchops_http_requests_total{method="GET",route="/api/v1/batch/{batch_id}",'
            'status="404"}' in exposition
        )
        assert 'batchops_http_request_duration_seconds_bucket{le="0.005",method="GET"' in (
            exposition
        )
        queue = settings.topology.requests_queue
        assert f'batchops_queue_consumers{{queue="{queue}"}} 1.0' in exposition
        assert f'batchops_queue_messages{{queue="{settings.topology.dead_letter_queue}"}} 1.0' in (
            exposition
        )
        assert '=""' not in exposition, re.findall(r".*=\"\".*", exposition)[:5]


class TestLogs:
    async def test_every_request_is_one_access_line_with_its_user(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        with capture_logs() as logs:
            await client.get(f"{API}/history/", headers=auth(tokens[CLIENT_3]))
            await client.get("/nowhere")

        history, nowhere = [line for line in logs if line["event"] == "http_request"]
        assert history == {
            **history,
            "method": "GET",
            "path": f"{API}/history/",
            "route": f"{API}/history",
            "status": 200,
            "user_id": CLIENT_3,
        }
        assert history["duration_ms"] > 0
        assert nowhere["status"] == 404
        assert nowhere["route"] == "unmatched"
        assert nowhere["user_id"] is None

    @pytest.mark.usefixtures("service")
    async def test_a_rejection_names_its_message_and_never_writes_none_as_text(
        self, settings: Settings, events: EventLog
    ) -> None:
        with capture_logs() as logs:
            await publish_raw(
                settings.amqp_url,
                settings.topology.requests_exchange,
                b"\xff not json",
                correlation_id="corr-42",
                message_id="msg-42",
            )
            await events.rejection()

        (rejected,) = [line for line in logs if line["event"] == "batch_rejected"]
        assert rejected["batch_id"] is None
        assert rejected["correlation_id"] == "corr-42"
        assert rejected["message_id"] == "msg-42"
        assert rejected["reason"] == "json_invalid"
        assert "None" not in {str(value) for value in rejected.values() if value is not None}


class TestConsoleOverHttp:
    async def test_signing_in_sets_an_http_only_strict_cookie(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        answer = await client.post(
            "/console/login", data={"token": tokens[ADMIN], "next": "https://evil.example/"}
        )

        assert answer.status_code == 303
        assert answer.headers["location"] == "/console"  # never back to another site
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie

    async def test_a_form_posted_with_the_cookie_but_without_its_csrf_token_is_refused(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        client.cookies.set("batchops_console", tokens[ADMIN])

        forged = await client.post("/console/dead-letters/purge", data={"confirm": "yes"})
        logged_out = await client.post("/console/logout", data={"csrf_token": "0" * 64})

        assert forged.status_code == 403
        assert "CSRF" in forged.text
        assert logged_out.status_code == 403

    async def test_a_bearer_token_works_without_a_cookie_for_scripts(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        page = await client.get("/console/batches", headers=auth(tokens[CLIENT_3]))
        anonymous = await client.get("/console/batches")
        refresh = await client.get("/console/batches", headers={"HX-Request": "true"})

        assert page.status_code == 200
        assert "matching batches" in page.text
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/console/login?next=")
        assert refresh.status_code == 401
        assert refresh.headers["hx-redirect"].startswith("/console/login")

    async def test_replay_all_wants_its_box_ticked_and_a_batch_id_must_be_one(
        self, client: httpx.AsyncClient, tokens: dict[int, str]
    ) -> None:
        unconfirmed = await client.post("/console/dead-letters/replay", headers=auth(tokens[ADMIN]))
        malformed = await client.post(
            "/console/dead-letters/replay",
            headers=auth(tokens[ADMIN]),
            data={"batch_id": "not-a-uuid"},
        )

        for answer in (unconfirmed, malformed):
            assert answer.status_code == 303, answer.text
        assert "tick%20the%20box" in unconfirmed.headers["location"]
        assert "is%20not%20a%20batch%20id" in malformed.headers["location"]

    async def test_the_overview_counts_the_requests_waiting_under_fair_share(
        self, client: httpx.AsyncClient, tokens: dict[int, str], settings: Settings
    ) -> None:
        rooms = {settings.namespace: 2, f"{settings.namespace}-other": 1}
        engine = observer_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                for namespace, count in rooms.items():
                    await conn.execute(
                        insert(waiting_requests), [waiting_row(namespace) for _ in range(count)]
                    )
            figures = await client.get(
                "/console/overview", headers={**auth(tokens[ADMIN]), "HX-Request": "true"}
            )
        finally:
            async with engine.begin() as conn:
                await conn.execute(
                    waiting_requests.delete().where(waiting_requests.c.namespace.in_(rooms))
                )
            await engine.dispose()

        assert figures.status_code == 200, figures.text
        assert re.search(r'id="fair-share-waiting">2<', figures.text), figures.text


def waiting_row(namespace: str) -> dict[str, object]:
    """A request waiting in `namespace`'s room (no consumer runs in these tests)."""
    return {
        "namespace": namespace,
        "batch_id": uuid.uuid4(),
        "body_sha256": bytes(32),
        "actor_id": PRO_6,
        "body": b"{}",
        "routing_key": "order_update",
    }


class TestOfflineDocs:
    @pytest.mark.parametrize(
        ("page", "asset"),
        [
            ("/docs", "/console/static/vendor/swagger-ui-bundle.js"),
            ("/redoc", "/console/static/vendor/redoc.standalone.js"),
        ],
    )
    async def test_the_docs_load_their_scripts_from_the_package(
        self, client: httpx.AsyncClient, page: str, asset: str
    ) -> None:
        html = (await client.get(page)).text
        script = await client.get(asset)

        assert asset in html
        assert not re.search(r"""(src|href)=["']https?://""", html), "a CDN link is left"
        assert script.status_code == 200
        assert len(script.content) > 100_000

    async def test_the_asyncapi_page_lists_every_channel_of_the_committed_document(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("/docs/asyncapi.json")).json()
        html = (await client.get("/docs/asyncapi")).text

        assert document["asyncapi"].startswith("3.")
        for name, channel in document["channels"].items():
            assert f'id="channel-{name}"' in html
            assert (channel["address"] or "") in html
        for name in document["components"]["messages"]:
            assert f'id="message-{name}"' in html
