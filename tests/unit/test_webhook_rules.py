"""The rules of webhooks without I/O: the address policy, the signature, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.domain.webhooks import first_refusal, next_try, refusal, retry_delay, signature
from tests.receiver import contract_snippet


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address judged, never bound
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:192.168.0.1", "private"),
        ("100.64.0.1", "not a public address"),
    ],
)
def test_internal_addresses_are_refused_with_their_kind_named(address: str, kind: str) -> None:
    why = refusal(ipaddress.ip_address(address))
    assert why is not None
    assert kind in why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_one_internal_address_among_public_ones_refuses_the_host() -> None:
    addresses = [ipaddress.ip_address(a) for a in ("8.8.8.8", "10.0.0.1")]
    assert first_refusal(addresses) == "10.0.0.1 is a private address"


def test_the_signature_is_the_hmac_sha256_of_timestamp_dot_body_keyed_by_the_secret() -> None:
    body = b'{"event_id": "e", "status": "completed"}'
    expected = hmac.new(b"s3cr\xc3\xa9t", b"1700000000." + body, hashlib.sha256).hexdigest()

    assert signature("s3cr\u00e9t", 1700000000, body) == f"t=1700000000,v1={expected}"


def test_a_different_secret_or_body_or_time_gives_a_different_signature() -> None:
    reference = signature("secret", 1, b"{}")
    assert signature("other", 1, b"{}") != reference
    assert signature("secret", 2, b"{}") != reference
    assert signature("secret", 1, b"{ }") != reference


def test_the_first_retry_comes_within_5_seconds_and_gaps_double_up_to_a_cap() -> None:
    delays = [retry_delay(attempts).total_seconds() for attempts in range(1, 30)]
    assert delays[0] <= 5
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == delays[-1] == 900


def test_jitter_stretches_a_gap_by_at_most_a_quarter() -> None:
    assert retry_delay(1, spread=0.999).total_seconds() < 1.25
    assert retry_delay(3, spread=0.5).total_seconds() == 4.5


def test_no_try_is_scheduled_past_the_budget() -> None:
    failed_at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    deadline = failed_at + timedelta(seconds=3)
    assert next_try(1, failed_at, deadline) == failed_at + timedelta(seconds=1)
    assert next_try(2, failed_at, deadline) == failed_at + timedelta(seconds=2)
    assert next_try(3, failed_at, deadline) is None


def test_the_python_verification_code_of_the_contract_accepts_a_signature_and_refuses_others() -> (
    None
):
    namespace: dict[str, Any] = {}
    exec(contract_snippet("python"), namespace)  # noqa: S102 - our own documentation's code
    verify = namespace["verify"]
    body = b'{"event_id": "e", "status": "completed"}'
    now = int(time.time())

    assert verify("secret", signature("secret", now, body), body)
    assert not verify("other", signature("secret", now, body), body)
    assert not verify("secret", signature("secret", now, body), body + b" ")
    assert not verify("secret", signature("secret", now - 3600, body), body), "too old"
