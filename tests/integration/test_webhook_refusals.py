"""A `callback_url` that could reach an internal network, or is not http(s), is refused with
422 naming the field, and nothing is stored (a batch is published only once it is stored) —
docs/contract.md, Webhooks."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from consumer.adapters.tables import webhooks
from tests.integration.conftest import API, CLIENT_3, auth
from tests.integration.helpers import count_batches, fetch, patch


@pytest.mark.parametrize(
    ("callback_url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://127.9.9.9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("http://172.16.5.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:9000/hook", "loopback"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://100.64.0.1/hook", "not a public address"),
        ("http://localhost:8000/hook", "loopback"),
        ("ftp://example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("/relative/hook", "http or https"),
        ("http://no-such-host.invalid/hook", "cannot be resolved"),
    ],
)
async def test_a_callback_to_an_internal_or_non_http_address_is_refused_and_nothing_stored(
    callback_url: str,
    why: str,
    database_url: str,
    client: httpx.AsyncClient,
    tokens: dict[int, str],
) -> None:
    body = {
        "batch_id": str(uuid.uuid4()),
        "operation_type": "order_update",
        "operations": [patch(3, notes="never")],
        "callback_url": callback_url,
    }

    response = await client.post(f"{API}/", json=body, headers=auth(tokens[CLIENT_3]))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "callback_url"]
    assert why in error["msg"]
    assert await count_batches(database_url) == 0
    assert await fetch(database_url, select(func.count()).select_from(webhooks)) == [(0,)]
