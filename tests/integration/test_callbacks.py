"""One webhook try (consumer/adapters/callbacks.py) against a real https receiver: the request
goes to the address that was checked while TLS and the Host header keep the URL's name."""

from __future__ import annotations

import ssl

import httpx
import trustme

from consumer.adapters.callbacks import Answer, post
from tests.receiver import Receiver


async def test_https_reaches_the_checked_address_with_the_name_in_sni_host_and_certificate() -> (
    None
):
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # A certificate for the name only (no IP address in it): checking it against the pinned
    # IP instead of the name would fail.
    ca.issue_cert("localhost").configure_cert(server_tls)
    names_asked: list[str | None] = []
    server_tls.sni_callback = lambda _socket, name, _context: names_asked.append(name)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async with (
        Receiver(tls=server_tls, host_name="localhost") as receiver,
        httpx.AsyncClient(verify=client_tls, follow_redirects=False, trust_env=False) as http,
    ):
        answer = await post(
            http,
            receiver.url,
            b'{"event_id": "e"}',
            {"Content-Type": "application/json"},
            allow_private=True,
            timeout_seconds=5,
        )
        (received,) = receiver.received

    assert answer == Answer(200)
    assert names_asked == ["localhost"]
    port = receiver.url.split(":")[2].split("/")[0]
    assert received.headers["host"] == f"localhost:{port}"
    assert received.body == b'{"event_id": "e"}'


async def test_a_certificate_for_another_name_is_a_failed_try() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("someone-else.example").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async with (
        Receiver(tls=server_tls, host_name="localhost") as receiver,
        httpx.AsyncClient(verify=client_tls, follow_redirects=False, trust_env=False) as http,
    ):
        answer = await post(http, receiver.url, b"{}", {}, allow_private=True, timeout_seconds=5)

    assert answer.status is None
    assert answer.error is not None
    assert "certificate" in answer.error.lower()
    assert receiver.received == []
