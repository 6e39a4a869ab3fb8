"""The HTTP API served by the console script: tokens, serving, and a schemathesis run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import ServeProcess, run_cli

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
# Never a 5xx, and every response as the OpenAPI document describes it.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


class TestTokens:
    def test_token_create_prints_the_token_alone_on_the_last_line(
        self, cli_env: dict[str, str]
    ) -> None:
        created = run_cli(cli_env, "token", "create", "3")

        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        assert token.startswith("bo_")
        assert " " not in token

    def test_token_create_for_an_unknown_user_fails_clearly(self, cli_env: dict[str, str]) -> None:
        result = run_cli(cli_env, "token", "create", "999")
        assert result.returncode == 2
        assert "user 999 does not exist" in result.stderr

    def test_token_revoke_refuses_an_unknown_token(self, cli_env: dict[str, str]) -> None:
        assert run_cli(cli_env, "token", "revoke", "bo_nope").returncode == 1


class TestWebhookSecret:
    def test_the_secret_is_created_once_printed_alone_and_replaced_by_rotate(
        self, cli_env: dict[str, str]
    ) -> None:
        first = run_cli(cli_env, "webhook-secret", "3")
        again = run_cli(cli_env, "webhook-secret", "3")
        rotated = run_cli(cli_env, "webhook-secret", "3", "--rotate")
        after = run_cli(cli_env, "webhook-secret", "3")

        assert [r.returncode for r in (first, again, rotated, after)] == [0, 0, 0, 0]
        secret = first.stdout.strip().splitlines()[-1]
        assert len(secret) >= 40
        assert " " not in secret
        assert again.stdout.strip().splitlines()[-1] == secret
        new = rotated.stdout.strip().splitlines()[-1]
        assert new != secret
        assert after.stdout.strip().splitlines()[-1] == new

    def test_the_secret_of_an_unknown_user_fails_clearly(self, cli_env: dict[str, str]) -> None:
        result = run_cli(cli_env, "webhook-secret", "999")
        assert result.returncode == 2
        assert "user 999 does not exist" in result.stderr
        assert result.stdout == ""


class TestServedApi:
    async def test_serve_answers_http_with_a_cli_token_until_sigterm(
        self, cli_env: dict[str, str], serve: Callable[..., ServeProcess]
    ) -> None:
        token = run_cli(cli_env, "token", "create", "6").stdout.strip().splitlines()[-1]
        service = serve()
        await service.wait_until_ready()
        port = service.probe_port

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready = await http.get("/readyz")
            submitted = await http.post(
                "/api/v1/batch/",
                params={"wait": 20},
                json={
                    "operation_type": "order_update",
                    "operations": [{"method": "PATCH", "resource_id": 3, "data": {"notes": "hi"}}],
                },
                headers={"Authorization": f"Bearer {token}"},
            )
        assert ready.json()["checks"] == {"database": True, "broker": True, "consumer": True}
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["status"] == "completed"

        revoked = run_cli(cli_env, "token", "revoke", token)
        assert revoked.returncode == 0, revoked.stderr
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            refused = await http.get(
                "/api/v1/batch/stats/", headers={"Authorization": f"Bearer {token}"}
            )
        assert refused.status_code == 401
        service.process.terminate()
        assert await asyncio.to_thread(service.process.wait, 20) == 0

    async def test_the_openapi_document_holds_under_schemathesis(
        self, cli_env: dict[str, str], serve: Callable[..., ServeProcess]
    ) -> None:
        token = run_cli(cli_env, "token", "create", "1").stdout.strip().splitlines()[-1]
        # Hundreds of requests with one token: the rate limits would answer most of them 429.
        service = serve(BATCHOPS_RATE_LIMIT_SUBMIT="0", BATCHOPS_RATE_LIMIT_READ="0")
        await service.wait_until_ready()
        port = service.probe_port

        result = await asyncio.to_thread(
            subprocess.run,
            [
                SCHEMATHESIS,
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--seed",
                "20261126",
                "--request-timeout",
                "40",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert "Tested: 10" in result.stdout, result.stdout[-3000:]  # every operation


class TestConsumerProbes:
    async def test_consume_serves_probes_and_metrics_on_its_metrics_port_and_nothing_else(
        self, cli_env: dict[str, str], serve: Callable[..., ServeProcess]
    ) -> None:
        consumer = serve("consume")  # its probes on BATCHOPS_METRICS_PORT = consumer.probe_port
        await consumer.wait_until_ready()
        port = consumer.probe_port

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready = await http.get("/readyz")
            exposition = await http.get("/metrics")
            api = await http.get("/api/v1/batch/stats/")

        assert ready.json()["checks"] == {"database": True, "broker": True, "consumer": True}
        assert "batchops_consumer_in_flight" in exposition.text
        assert api.status_code == 404
        consumer.process.terminate()
        assert await asyncio.to_thread(consumer.process.wait, 20) == 0
