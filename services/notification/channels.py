"""The delivery channels, each behind the one small :class:`Channel` interface.

- ``stream``: the recipient's replay log, a Redis Stream ``notification:stream:{recipient}``
  capped at ``STREAM_MAXLEN``, plus a wake-up on the ``notification:live`` pub/sub channel.
  The SSE routes replay the stream after a reconnecting client's ``Last-Event-ID`` and
  then follow it live (see ``live.py``). Redis is shared, so any instance can serve any
  responder.
- ``webhook``: one signed HTTP POST per attempt, to an address checked by ``egress.py``
  and pinned for the connection; the workers retry it.
- ``sms``: an :class:`SmsSender` chosen by configuration (``SMS_SENDER``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import json
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx
from redis.asyncio import Redis

from services.notification.egress import EgressPolicy, Resolver, WebhookRefused
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


# Puts a recipient's recent deliveries back on a stream Redis lost (oldest first), so
# the stream ends in the order the deliveries were made: from the first one whose
# marker is gone, every one is added again, those already there too (a delivery made
# after Redis came back, before this rebuild). Nothing missing: nothing is added, so
# instances rebuilding at once do not add everything twice.
_RESTORE = """
local added = 0
local from = nil
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then from = i break end
end
if not from then return 0 end
for i = from, #KEYS do
  local at = 3 + (i - 2) * 2
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                        'type', ARGV[at], 'data', ARGV[at + 1])
  redis.call('SET', KEYS[i], id, 'EX', ARGV[2])
  added = added + 1
end
redis.call('PUBLISH', ARGV[#ARGV - 1], ARGV[#ARGV])
return added
"""


def marker_key(delivery_id: uuid.UUID) -> str:
    """The key saying a delivery is on its stream (and at which entry)."""
    return f"notification:streamed:{delivery_id}"


class StreamChannel:
    """Appends to the recipient's Redis Stream, which live SSE clients are reading."""

    name = "stream"

    def __init__(self, redis: Redis, *, maxlen: int, marker_ttl_s: int = 6 * 3600) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._marker_ttl_s = marker_ttl_s
        # Sent by its digest (EVALSHA); redis-py loads it again after a Redis restart.
        self._xadd_once = redis.register_script(_XADD_ONCE)

    async def send(self, delivery: Delivery) -> None:
        """XADD the message once."""
        kind = json.loads(delivery.message).get("type", "message")
        await self._xadd_once(
            keys=[stream_key(delivery.recipient), marker_key(delivery.id)],
            args=[
                self._maxlen,
                kind,
                delivery.message,
                self._marker_ttl_s,
                LIVE_CHANNEL,
                delivery.recipient,
            ],
        )

    async def restore(self, recipient: str, deliveries: Sequence[Delivery]) -> int:
        """Put back what Redis lost of ``deliveries`` (oldest first); how many were added."""
        if not deliveries:
            return 0
        fields: list[str | int] = [self._maxlen, self._marker_ttl_s]
        for delivery in deliveries:
            fields += [json.loads(delivery.message).get("type", "message"), delivery.message]
        added = await self._redis.eval(
            _RESTORE,
            1 + len(deliveries),
            stream_key(recipient),
            *[marker_key(d.id) for d in deliveries],
            *fields,
            LIVE_CHANNEL,
            recipient,
        )
        return int(added)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: HMAC-SHA256 over ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is ours for this timestamp and body (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_client(
    *, connect_timeout_s: float, timeout_s: float, verify: ssl.SSLContext | bool = True
) -> httpx.AsyncClient:
    """The HTTP client for webhooks: no redirects, no proxies from the environment (a
    proxy would resolve the name again) and no kept-alive connections (each call goes
    to the address checked for it, never to one checked for another host)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_keepalive_connections=0),
        verify=verify,
    )


class WebhookChannel:
    """POSTs the message with a signature and timestamp; 2xx is success.

    Each attempt resolves the URL's host, checks every address against the audience's
    :class:`EgressPolicy` and connects to the checked address with the original name in
    ``Host`` and in TLS SNI (the certificate is verified against that name). A refused
    address, a redirect and most 4xx answers are permanent failures.
    """

    name = "webhook"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret: str,
        clock: Clock,
        policies: Mapping[str, EgressPolicy],
        resolver: Resolver,
        timeout_s: float,
        max_response_bytes: int,
    ) -> None:
        self._client = client
        self._secret = secret
        self._clock = clock
        self._policies = policies
        self._resolver = resolver
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes

    async def send(self, delivery: Delivery) -> None:
        """One signed POST, within the total time limit."""
        if not delivery.target:
            raise DeliveryError("webhook has no url", permanent=True)
        policy = self._policies.get(delivery.audience, EgressPolicy())
        status = await self._post(delivery, delivery.target, policy)
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryError(
                f"receiver answered {status}; redirects are not followed", permanent=True
            )
        # A client error other than timeout or throttling will not change on retry.
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise DeliveryError(f"receiver answered {status}", permanent=permanent)

    async def _post(self, delivery: Delivery, url: str, policy: EgressPolicy) -> int:
        """Resolve, check and POST; the answer's status once its headers are in."""
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._open(delivery, url, policy)
        except TimeoutError as exc:
            raise DeliveryError(f"no answer within {self._timeout_s}s") from exc
        try:
            # The status is in: a body that is slow or large is cut off, not waited for.
            async with asyncio.timeout_at(deadline):
                await self._read_capped(answer)
        except (TimeoutError, httpx.HTTPError, httpx.StreamError):
            pass
        finally:
            await answer.aclose()
        return answer.status_code

    async def _open(self, delivery: Delivery, url: str, policy: EgressPolicy) -> httpx.Response:
        try:
            pinned = await policy.resolve(url, self._resolver)
        except WebhookRefused as exc:
            log.warning("webhook refused: %s", exc, extra={"delivery_id": str(delivery.id)})
            raise DeliveryError(str(exc), permanent=True) from exc
        body = delivery.message.encode()
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "host": pinned.host_header,
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            DELIVERY_HEADER: str(delivery.id),
        }
        request = self._client.build_request(
            "POST",
            pinned.connect_url,
            content=body,
            headers=headers,
            extensions={"sni_hostname": pinned.target.host},
        )
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    async def _read_capped(self, answer: httpx.Response) -> None:
        """Read at most the configured number of bytes of the answer, then stop."""
        read = 0
        async for chunk in answer.aiter_raw():
            read += len(chunk)
            if read >= self._max_response_bytes:
                return


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
