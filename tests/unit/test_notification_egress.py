"""The webhook address rules: which addresses, names and schemes a webhook may reach."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from services.notification.egress import (
    AllowEntry,
    EgressPolicy,
    WebhookRefused,
    not_public,
)
from services.notification.settings import NotificationSettings
from tests.fake_dns import FakeResolver

AUTH_SECRET = "unit-test-auth-secret-0123456789abcdef"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
        ("2001:db8::1", "private"),  # documentation range
    ],
)
def test_addresses_inside_are_refused_with_their_reason(address: str, reason: str) -> None:
    problem = not_public(ipaddress.ip_address(address))
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not_public(ipaddress.ip_address(address)) is None


PUBLIC = FakeResolver(
    {
        "hooks.example.test": ["93.184.216.34", "2606:2800:220:1::1"],
        "inside.example.test": ["10.20.0.5"],
        "mixed.example.test": ["93.184.216.34", "127.0.0.1"],
        "six.example.test": ["::1"],
        "desk.internal": ["10.20.0.9"],
        "meta.example.test": ["169.254.169.254"],
    }
)


async def refusal(policy: EgressPolicy, url: str) -> str:
    with pytest.raises(WebhookRefused) as refused:
        await policy.resolve(url, PUBLIC)
    return str(refused.value)


async def test_a_public_https_url_is_pinned_to_its_first_checked_address() -> None:
    pinned = await EgressPolicy().resolve("https://hooks.example.test:8443/in?x=1", PUBLIC)
    assert str(pinned.address) == "93.184.216.34"
    assert str(pinned.connect_url) == "https://93.184.216.34:8443/in?x=1"
    assert pinned.host_header == "hooks.example.test:8443"
    assert pinned.target.host == "hooks.example.test"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://inside.example.test/h", "private"),
        ("https://mixed.example.test/h", "loopback"),
        ("https://six.example.test/h", "loopback"),
        ("https://meta.example.test/h", "metadata"),
        ("https://127.0.0.1/h", "loopback"),
        ("https://[::1]/h", "loopback"),
        ("https://[::ffff:7f00:1]/h", "loopback"),
        ("https://[fd00:ec2::254]/latest", "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("https://localhost:8004/v1/deliveries", "local host"),
        ("https://api.localhost/h", "local host"),
        ("https://nowhere.example.test/h", "does not resolve"),
        ("http://hooks.example.test/h", "https"),
        ("ftp://hooks.example.test/h", "https"),
    ],
)
async def test_urls_that_reach_inside_are_refused(url: str, reason: str) -> None:
    assert reason in await refusal(EgressPolicy(), url)


async def test_the_allowlist_admits_an_internal_host_by_name_or_block() -> None:
    by_name = EgressPolicy.from_entries(["desk.internal"])
    assert str((await by_name.resolve("https://desk.internal/h", PUBLIC)).address) == "10.20.0.9"
    # The entry admits that host only, not every private address.
    assert "private" in await refusal(by_name, "https://inside.example.test/h")

    by_block = EgressPolicy.from_entries(["10.20.0.0/16"])
    await by_block.resolve("https://inside.example.test/h", PUBLIC)
    await by_block.resolve("https://[::ffff:10.20.0.1]/h", PUBLIC)
    assert "private" in await refusal(by_block, "https://10.21.0.1/h")


async def test_plain_http_needs_an_http_allowlist_entry() -> None:
    https_only = EgressPolicy.from_entries(["desk.internal", "127.0.0.1"])
    assert "https" in await refusal(https_only, "http://desk.internal/h")
    assert "https" in await refusal(https_only, "http://127.0.0.1:9000/h")
    assert "https" in await refusal(https_only, "http://hooks.example.test/h")

    http = EgressPolicy.from_entries(["http://desk.internal", "http://127.0.0.1"])
    await http.resolve("http://desk.internal/h", PUBLIC)
    await http.resolve("http://127.0.0.1:9000/h", PUBLIC)
    # An http entry for one host does not open http to a public host.
    assert "https" in await refusal(http, "http://hooks.example.test/h")


async def test_no_allowlist_entry_opens_the_metadata_endpoints() -> None:
    policy = EgressPolicy.from_entries(["http://169.254.0.0/16", "http://meta.example.test"])
    assert "metadata" in await refusal(policy, "http://169.254.169.254/latest/meta-data/")
    assert "metadata" in await refusal(policy, "http://meta.example.test/")
    await policy.resolve("http://169.254.10.10/h", PUBLIC)


@pytest.mark.parametrize("entry", ["", "http://", "10.0.0.0/33", "a/b"])
def test_a_malformed_allowlist_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry"):
        AllowEntry.parse(entry)


def settings(**values: object) -> NotificationSettings:
    return NotificationSettings.model_validate({"auth_secret": AUTH_SECRET, **values})


def test_a_configured_dispatcher_webhook_follows_the_same_rules() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        settings(dispatcher_webhook_url="https://127.0.0.1:9000/h")
    with pytest.raises(ValidationError, match="https"):
        settings(dispatcher_webhook_url="http://desk.internal/h")
    allowed = settings(
        dispatcher_webhook_url="http://desk.internal/h",
        webhook_allowed_hosts=["http://desk.internal"],
    )
    assert allowed.dispatcher_policy.allowed == (AllowEntry(name="desk.internal", http=True),)
    assert allowed.reporter_policy.allowed == ()
    with pytest.raises(ValidationError, match="neither a host nor a CIDR"):
        settings(webhook_allowed_hosts=["10.0.0.0/99"])
