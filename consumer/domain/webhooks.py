"""The rules of webhooks that need no I/O: which addresses a callback may reach, how a
delivery is signed, and when a failed one is tried again (docs/contract.md, Webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNATURE_HEADER = "Batchops-Signature"
EVENT_ID_HEADER = "Batchops-Event-Id"
CALLBACK_SCHEMES = frozenset({"http", "https"})

# Retries double from the first (within 5 s of the failure, as the contract promises) up to
# this gap: a receiver down for a day is still tried every quarter of an hour.
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_GAP_SECONDS = 900.0
# Each gap is stretched by up to this fraction, so that the webhooks of a receiver that came
# back do not all arrive in the same second.
JITTER = 0.25


def refusal(address: IPAddress) -> str | None:
    """Why a callback may not reach `address` (an internal network), or None when it is a
    public one. IPv4 addresses mapped into IPv6 are judged as the IPv4 address they carry."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, found in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        # Last: `is_private` also covers most of the above, whose names say more.
        ("private", address.is_private),
    ):
        if found:
            return f"{address} is a {kind} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def first_refusal(addresses: Iterable[IPAddress]) -> str | None:
    """Why not, for the first refused address of a host (one is enough: the connection could
    be made to any of them)."""
    return next((why for why in map(refusal, addresses) if why is not None), None)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Batchops-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
    keyed by the UTF-8 bytes of the user's webhook secret."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempts: int, spread: float = 0.0) -> timedelta:
    """How long after the `attempts`-th failed try the next one starts: 1 s, 2 s, 4 s, …,
    at most MAX_RETRY_GAP_SECONDS, stretched by `spread` (0 to 1, random) times JITTER."""
    exponent = min(max(attempts - 1, 0), 20)  # 2**20 s is far past any gap we allow
    gap = min(FIRST_RETRY_SECONDS * 2**exponent, MAX_RETRY_GAP_SECONDS)
    return timedelta(seconds=gap * (1 + JITTER * spread))


def next_try(
    attempts: int, failed_at: datetime, deadline: datetime, spread: float = 0.0
) -> datetime | None:
    """When to try again after `attempts` tries failed, or None to give up: the next try
    would start past `deadline` (the batch's completion plus the retry budget)."""
    at = failed_at + retry_delay(attempts, spread)
    return at if at <= deadline else None
