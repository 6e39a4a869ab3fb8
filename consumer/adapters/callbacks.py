"""Reaching a webhook receiver: the callback URL checked against the address policy, its host
resolved (at submission and again before every try), and the POST sent to the address that
was checked, so that a DNS answer changed in between (DNS rebinding) cannot redirect it.

The request goes to the checked IP; the `Host` header and TLS SNI (and so the certificate's
check) keep the URL's host name. Redirects are not followed (a 3xx is a failed try), the
answer's body is read to at most ANSWER_BYTES, and the whole try is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from consumer.domain.webhooks import CALLBACK_SCHEMES, IPAddress, first_refusal

# Receivers answer with a status; their body only tells us something in a log line.
ANSWER_BYTES = 4096
MAX_URL_LENGTH = 2000
# A name that takes longer to resolve is refused at submission (a try has its own timeout).
RESOLVE_SECONDS = 5.0


class CallbackRefused(ValueError):
    """The callback URL may not be used: not http(s), no host, unresolvable, or a host on an
    internal network."""


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    address: IPAddress


@dataclass(frozen=True, slots=True)
class Answer:
    """How one try ended: the receiver's status, or why there was none."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def check(url: str, *, allow_private: bool) -> Target:
    """The URL and the address to connect to. Raises CallbackRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CallbackRefused(f"not a URL: {exc}") from None
    if parsed.scheme not in CALLBACK_SCHEMES:
        raise CallbackRefused(f"must be an http or https URL, not {parsed.scheme or 'relative'}")
    if not parsed.host:
        raise CallbackRefused("has no host")
    addresses = await _resolve(parsed.host)
    if not allow_private and (why := first_refusal(addresses)):
        raise CallbackRefused(f"{parsed.host} is not reachable from outside: {why}")
    return Target(parsed, addresses[0])


async def _resolve(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass  # a name, not a literal address
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise CallbackRefused(f"{host} was not resolved within {RESOLVE_SECONDS:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused(f"{host} cannot be resolved: {exc}") from None
    # Zone ids (fe80::1%eth0) are dropped: such addresses are link-local, refused anyway.
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if not found:
        raise CallbackRefused(f"{host} has no address")
    return sorted(found, key=lambda address: (address.version, int(address)))


def client(timeout_seconds: float) -> httpx.AsyncClient:
    """The client every try goes through: no redirects, no proxies from the environment (the
    request must reach the checked address), and `timeout_seconds` for each phase."""
    return httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout_seconds)
    )


async def post(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    timeout_seconds: float,
) -> Answer:
    """One try, resolving included, within `timeout_seconds`: check the URL again, POST to
    the checked address, read a little of the answer."""
    try:
        async with asyncio.timeout(timeout_seconds):
            target = await check(url, allow_private=allow_private)
            return await _send(http, target, body, headers)
    except CallbackRefused as exc:
        return Answer(None, f"refused: {exc}")
    except TimeoutError:
        return Answer(None, f"no answer within {timeout_seconds:g}s")
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}".rstrip(": "))


async def _send(
    http: httpx.AsyncClient, target: Target, body: bytes, headers: Mapping[str, str]
) -> Answer:
    pinned = target.url.copy_with(host=str(target.address))
    extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
    request = http.build_request(
        "POST",
        pinned,
        content=body,
        headers={**headers, "Host": target.url.netloc.decode("ascii")},
        extensions=extensions,
    )
    response = await http.send(request, stream=True)
    try:
        await _read_at_most(response, ANSWER_BYTES)
    finally:
        await response.aclose()
    return Answer(response.status_code)


async def _read_at_most(response: httpx.Response, limit: int) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            return
