"""Notification's channels without a network: signatures, webhook outcomes and SMS."""

from __future__ import annotations

import json
import logging
import uuid
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
from services.notification.models import Delivery, WebhookCreate
from shared.clock import FakeClock

SECRET = "unit-test-webhook-secret"


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
        await WebhookChannel(client, secret=SECRET, clock=clock).send(item)

    request = seen[0]
    assert str(request.url) == item.target
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
        channel = WebhookChannel(client, secret=SECRET, clock=FakeClock())
        with pytest.raises(DeliveryError) as failure:
            await channel.send(delivery())
    assert failure.value.permanent is permanent


async def test_an_unreachable_receiver_is_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(DeliveryError) as failure:
            await WebhookChannel(client, secret=SECRET, clock=FakeClock()).send(delivery())
    assert failure.value.permanent is False


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
