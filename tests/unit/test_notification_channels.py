"""Notification's channels without a network: signatures, webhook outcomes and SMS."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from services.notification.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryError,
    LoggingSmsSender,
    SmsChannel,
    WebhookChannel,
    load_sms_sender,
    sign,
    verify,
)
from services.notification.egress import EgressPolicy
from services.notification.models import Delivery, WebhookCreate
from shared.clock import Clock, FakeClock
from tests.fake_dns import FakeResolver

SECRET = "unit-test-webhook-secret"
PUBLIC_ADDRESS = "93.184.216.34"


def webhook_channel(
    client: httpx.AsyncClient,
    *,
    clock: Clock | None = None,
    resolver: FakeResolver | None = None,
    max_response_bytes: int = 1024,
) -> WebhookChannel:
    """A webhook channel whose DNS answers hooks.example.test with a public address."""
    return WebhookChannel(
        client,
        secret=SECRET,
        clock=clock or FakeClock(),
        policies={"dispatcher": EgressPolicy(), "reporter": EgressPolicy()},
        resolver=resolver or FakeResolver({"hooks.example.test": [PUBLIC_ADDRESS]}),
        timeout_s=5.0,
        max_response_bytes=max_response_bytes,
    )


def delivery(**overrides: object) -> Delivery:
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "TargetBreached",
        "channel": "webhook",
        "audience": "dispatcher",
        "recipient": "configured",
        "target": "https://hooks.example.test/in",
        "message": json.dumps({"type": "target_breached", "stage": "T1"}),
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return Delivery.model_validate(values)


def test_a_signature_covers_the_timestamp_and_the_body() -> None:
    signature = sign(SECRET, "1767225600", b'{"a":1}')
    assert signature.startswith("sha256=")
    assert verify(SECRET, "1767225600", b'{"a":1}', signature)
    assert not verify(SECRET, "1767225601", b'{"a":1}', signature)
    assert not verify(SECRET, "1767225600", b'{"a":2}', signature)
    assert not verify("another-secret", "1767225600", b'{"a":1}', signature)


async def test_a_webhook_is_posted_signed_with_the_clock_time() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    clock = FakeClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    item = delivery()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        await webhook_channel(client, clock=clock).send(item)

    request = seen[0]
    # Connected to the address that was checked, with the name in Host and TLS SNI.
    assert str(request.url) == f"https://{PUBLIC_ADDRESS}/in"
    assert request.headers["host"] == "hooks.example.test"
    assert request.extensions["sni_hostname"] == "hooks.example.test"
    assert request.headers[TIMESTAMP_HEADER] == str(int(clock.now().timestamp()))
    assert request.headers[DELIVERY_HEADER] == str(item.id)
    assert verify(
        SECRET,
        request.headers[TIMESTAMP_HEADER],
        request.content,
        request.headers[SIGNATURE_HEADER],
    )
    assert json.loads(request.content) == json.loads(item.message)


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (503, False), (429, False), (408, False), (404, True)]
)
async def test_server_errors_are_retried_and_client_errors_are_not(
    status: int, permanent: bool
) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status))
    async with httpx.AsyncClient(transport=transport) as client:
        channel = webhook_channel(client)
        with pytest.raises(DeliveryError) as failure:
            await channel.send(delivery())
    assert failure.value.permanent is permanent


async def test_an_unreachable_receiver_is_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(DeliveryError) as failure:
            await webhook_channel(client).send(delivery())
    assert failure.value.permanent is False


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_and_not_retried(status: int) -> None:
    seen: list[httpx.Request] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"location": "http://127.0.0.1/admin"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(redirect)) as client:
        with pytest.raises(DeliveryError, match="redirects are not followed") as failure:
            await webhook_channel(client).send(delivery())
    assert failure.value.permanent is True
    assert len(seen) == 1


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["10.0.0.7"], [PUBLIC_ADDRESS, "192.168.1.1"], ["::ffff:169.254.169.254"]],
)
async def test_a_name_that_resolves_inside_at_call_time_is_refused_without_connecting(
    answers: list[str],
) -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    resolver = FakeResolver({"hooks.example.test": answers})
    async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as client:
        with pytest.raises(DeliveryError, match="refused") as failure:
            await webhook_channel(client, resolver=resolver).send(delivery())
    assert failure.value.permanent is True
    assert seen == []


async def test_a_large_answer_is_read_only_up_to_the_cap() -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            pulled.append(1)
            yield b"x" * 512

    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=endless()))
    async with httpx.AsyncClient(transport=transport) as client:
        await webhook_channel(client, max_response_bytes=2048).send(delivery())
    assert len(pulled) == 4


async def test_the_logging_sms_sender_logs_the_offer_text(caplog: pytest.LogCaptureFixture) -> None:
    offer = {"type": "offer", "category": "fall", "eta_s": 90.4, "accept_url": "https://d/a"}
    item = delivery(channel="sms", recipient=str(uuid.uuid4()), message=json.dumps(offer))
    with caplog.at_level(logging.INFO):
        await SmsChannel(LoggingSmsSender()).send(item)
    assert "Offer: fall" in caplog.text
    assert "https://d/a" in caplog.text


def test_the_sms_provider_is_chosen_by_its_class_path() -> None:
    sender = load_sms_sender("services.notification.channels:LoggingSmsSender")
    assert isinstance(sender, LoggingSmsSender)
    with pytest.raises(ValueError, match="module:Class"):
        load_sms_sender("LoggingSmsSender")


def test_a_reporter_webhook_needs_its_report_and_a_dispatcher_webhook_has_none() -> None:
    report_id = uuid.uuid4()
    ok = WebhookCreate.model_validate(
        {"url": "https://app.example.test/hook", "audience": "reporter", "report_id": report_id}
    )
    assert ok.report_id == report_id
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate({"url": "https://x.test/h", "audience": "reporter"})
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate(
            {"url": "https://x.test/h", "audience": "dispatcher", "report_id": report_id}
        )
    with pytest.raises(ValidationError):
        WebhookCreate.model_validate({"url": "ftp://x.test/h", "audience": "dispatcher"})
