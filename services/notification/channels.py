"""The delivery channels, each behind the one small :class:`Channel` interface.

- ``stream``: the recipient's replay log, a Redis Stream ``notification:stream:{recipient}``
  capped at ``STREAM_MAXLEN``, plus a wake-up on the ``notification:live`` pub/sub channel.
  The SSE routes replay the stream after a reconnecting client's ``Last-Event-ID`` and
  then follow it live (see ``live.py``). Redis is shared, so any instance can serve any
  responder.
- ``webhook``: one signed HTTP POST per attempt; the workers retry it.
- ``sms``: an :class:`SmsSender` chosen by configuration (``SMS_SENDER``).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
from typing import Any, Protocol

import httpx
from redis.asyncio import Redis

from services.notification.models import Delivery
from shared.clock import Clock

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Notification-Signature"
TIMESTAMP_HEADER = "X-Notification-Timestamp"
DELIVERY_HEADER = "X-Notification-Delivery"
DISPATCHERS = "dispatchers"
LIVE_CHANNEL = "notification:live"


class DeliveryError(Exception):
    """An attempt failed; ``permanent`` failures are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    """Sends one delivery once; raises :class:`DeliveryError` when it did not arrive."""

    name: str

    async def send(self, delivery: Delivery) -> None:
        """Make one attempt."""
        ...


def stream_key(recipient: str) -> str:
    """The Redis Stream that is ``recipient``'s replay log."""
    return f"notification:stream:{recipient}"


# Adds each delivery once: a marker guards the XADD, so a delivery retried after a
# crash between XADD and the database update is not shown twice. The PUBLISH only
# wakes live clients; they read the message itself from the stream.
_XADD_ONCE = """
local done = redis.call('GET', KEYS[2])
if done then return done end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'type', ARGV[2], 'data', ARGV[3])
redis.call('SET', KEYS[2], id, 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return id
"""


class StreamChannel:
    """Appends to the recipient's Redis Stream, which live SSE clients are reading."""

    name = "stream"

    def __init__(self, redis: Redis, *, maxlen: int, marker_ttl_s: int = 6 * 3600) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._marker_ttl_s = marker_ttl_s

    async def send(self, delivery: Delivery) -> None:
        """XADD the message once."""
        kind = json.loads(delivery.message).get("type", "message")
        await self._redis.eval(
            _XADD_ONCE,
            2,
            stream_key(delivery.recipient),
            f"notification:streamed:{delivery.id}",
            self._maxlen,
            kind,
            delivery.message,
            self._marker_ttl_s,
            LIVE_CHANNEL,
            delivery.recipient,
        )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 over ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ours for this timestamp and body (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    """POSTs the message with a signature and timestamp; 2xx is success."""

    name = "webhook"

    def __init__(self, client: httpx.AsyncClient, *, secret: str, clock: Clock) -> None:
        self._client = client
        self._secret = secret
        self._clock = clock

    async def send(self, delivery: Delivery) -> None:
        """One signed POST."""
        if not delivery.target:
            raise DeliveryError("webhook has no url", permanent=True)
        body = delivery.message.encode()
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            DELIVERY_HEADER: str(delivery.id),
        }
        try:
            answer = await self._client.post(delivery.target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if answer.is_success:
            return
        # A client error other than timeout or throttling will not change on retry.
        permanent = 400 <= answer.status_code < 500 and answer.status_code not in (408, 429)
        raise DeliveryError(f"receiver answered {answer.status_code}", permanent=permanent)


class SmsSender(Protocol):
    """An SMS provider. ``to`` is the responder id; the provider knows their number."""

    async def send(self, *, to: str, text: str) -> None:
        """Send one text; raise on failure."""
        ...


class LoggingSmsSender:
    """The embedded default: logs the text instead of sending it."""

    async def send(self, *, to: str, text: str) -> None:
        """Log the message (never the number: the locator owns phone numbers)."""
        log.info("sms (logged, not sent): %s", text, extra={"recipient": to})


def load_sms_sender(path: str) -> SmsSender:
    """Build the provider named ``module:Class`` (or ``module.Class``)."""
    module_name, _, class_name = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ValueError(f"SMS_SENDER must be module:Class, got {path!r}")
    sender: SmsSender = getattr(importlib.import_module(module_name), class_name)()
    return sender


def sms_text(message: dict[str, Any]) -> str:
    """A short text for a message."""
    kind = message.get("type")
    if kind == "offer":
        return (
            f"Offer: {message.get('category')} {message.get('address') or ''} "
            f"ETA {round(float(message.get('eta_s') or 0))}s. Accept: {message.get('accept_url')}"
        )
    if kind == "offer_withdrawn":
        return f"Offer withdrawn ({message.get('reason')})."
    return f"Update: {message.get('event_type')}"


class SmsChannel:
    """Texts the recipient through the configured provider."""

    name = "sms"

    def __init__(self, sender: SmsSender) -> None:
        self._sender = sender

    async def send(self, delivery: Delivery) -> None:
        """One text."""
        try:
            await self._sender.send(
                to=delivery.recipient, text=sms_text(json.loads(delivery.message))
            )
        except Exception as exc:
            raise DeliveryError(f"sms provider: {exc}") from exc
