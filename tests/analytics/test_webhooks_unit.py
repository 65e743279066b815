"""Webhook helpers without any server: signing, backoff, URL and address checks."""

from __future__ import annotations

import ipaddress

import pytest

from livecore.errors import ValidationFailed
from livecore.webhooks import (
    MAX_CLIENTS,
    BlockedTarget,
    WebhookSettings,
    WebhookWorker,
    backoff_s,
    event_body,
    is_public_ip,
    resolve_target,
    sign,
    validate_url,
    verify_signature,
)
from tests.analytics.support import expected_signature


def test_signature_matches_the_documented_recipe() -> None:
    body = event_body("evt_1", "order.paid", "s_1", 1_700_000_000_000, {"order": {"id": "o_1"}})
    ts = 1_700_000_000_123
    signature = sign("whsec_test_secret_123", ts, body)
    assert signature == expected_signature("whsec_test_secret_123", str(ts), body)
    assert verify_signature("whsec_test_secret_123", body, signature, str(ts), now=ts + 1000)
    # tampered body, wrong secret, stale or missing timestamp
    assert not verify_signature("whsec_test_secret_123", body + b" ", signature, str(ts), now=ts)
    assert not verify_signature("another_secret_12345", body, signature, str(ts), now=ts)
    assert not verify_signature("whsec_test_secret_123", body, signature, str(ts), now=ts + 600_000)
    assert not verify_signature("whsec_test_secret_123", body, signature, None, now=ts)
    assert not verify_signature("whsec_test_secret_123", body, None, str(ts), now=ts)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    assert backoff_s(1, 2, 3600, rand=0.5) == 2
    assert backoff_s(2, 2, 3600, rand=0.5) == 4
    assert backoff_s(5, 2, 3600, rand=0.5) == 32
    assert backoff_s(1, 2, 3600, rand=0.0) == 1.5 and backoff_s(1, 2, 3600, rand=1.0) == 2.5
    assert backoff_s(40, 2, 3600, rand=1.0) == 3600 and backoff_s(10_000, 2, 60, rand=0.5) == 60


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/livecore", "http://93.184.215.14:8080/x?y=1",
    "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/h",
])
def test_public_urls_are_accepted(url: str) -> None:
    assert validate_url(url, allow_private=False) == url


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "file:///etc/passwd", "gopher://example.com", "//example.com/x",
    "https://user:pass@example.com/x", "https:///nohost", "http://example.com:99999/",
    "https://example.com/x#frag", "javascript:alert(1)", "x" * 3000,
    "http://127.0.0.1:8000/", "http://localhost/", "http://[::1]/", "http://10.0.0.5/",
    "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://metadata.google.internal/", "http://printer.local/",
])
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed):
        validate_url(url, allow_private=False)


def test_private_targets_allowed_only_when_configured() -> None:
    assert validate_url("http://127.0.0.1:9/x", allow_private=True)
    with pytest.raises(ValidationFailed):
        validate_url("ftp://127.0.0.1/", allow_private=True)


def test_public_address_classification() -> None:
    for a in ("8.8.8.8", "2001:4860:4860::8888"):
        assert is_public_ip(ipaddress.ip_address(a)), a
    for a in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1",
              "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "2002:7f00:1::"):
        assert not is_public_ip(ipaddress.ip_address(a)), a


async def test_resolution_is_checked_at_delivery_time() -> None:
    with pytest.raises(BlockedTarget):
        await resolve_target("localhost", 80, allow_private=False)
    with pytest.raises(BlockedTarget):
        await resolve_target("127.0.0.1", 80, allow_private=False)
    assert await resolve_target("127.0.0.1", 80, allow_private=True) == "127.0.0.1"
    assert await resolve_target("8.8.8.8", 443, allow_private=False) == "8.8.8.8"


async def test_connections_are_pooled_per_host_name() -> None:
    worker = WebhookWorker(None, WebhookSettings(timeout_s=0.1), "unit")  # type: ignore[arg-type]
    a = worker._client(("https", "a.example", 443))
    assert worker._client(("https", "a.example", 443)) is a
    assert worker._client(("https", "b.example", 443)) is not a  # same IP or not: never shared
    for i in range(MAX_CLIENTS + 5):
        worker._client(("https", f"h{i}.example", 443))
    assert len(worker._clients) == MAX_CLIENTS
    await worker.stop()
    assert worker._clients == {}
