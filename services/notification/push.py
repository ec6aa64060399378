"""Web Push: offers reach a responder's phone while the app is in the background.

- The responder app subscribes through the browser's push service and registers the
  subscription here (``POST /v1/responders/{id}/push-subscriptions``); subscriptions
  live in Redis, a hash per responder keyed by a digest of the endpoint.
- :class:`PushChannel` is one more delivery channel (``push`` in ``RESPONDER_CHANNELS``):
  it encrypts the message (RFC 8291, aes128gcm) and signs a VAPID token (RFC 8292)
  with pywebpush, for every device of the responder. A device the push service
  reports gone (404/410) is forgotten. SMS stays the fallback channel.
- VAPID keys come from ``VAPID_PRIVATE_KEY`` or, for the embedded stack, a PEM file
  (``VAPID_KEY_FILE``) created on first start.
- Only push services on ``PUSH_ENDPOINT_HOSTS`` are accepted, over https, so a
  subscription cannot turn this service into a client of internal addresses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import APIRouter, Depends
from py_vapid import Vapid02
from pydantic import BaseModel, ConfigDict, Field
from pywebpush import WebPushException, webpush
from redis.asyncio import Redis
from sqlalchemy import Table, delete
from sqlmodel import col, select

from services.notification.channels import DeliveryError
from services.notification.models import Delivery, PushSubscriptionRow
from services.notification.routes import NotifierDep
from services.notification.settings import NotificationSettings
from shared.auth import CurrentPrincipal, Role, require_self_or
from shared.clock import Clock
from shared.db import SessionFactory, is_sqlite, transaction, upsert_insert
from shared.errors import Invalid, NotFound, error_responses

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["push"])
MAX_DEVICES = 5
# Push services cap payloads at about 4 KB; an offer is far smaller.
MAX_PAYLOAD_BYTES = 3000
# Where an older version kept subscriptions: a Redis hash per responder.
LEGACY_PREFIX = "notification:push:"


class PushKeys(BaseModel):
    """The browser's encryption keys for one subscription (base64url)."""

    model_config = ConfigDict(extra="ignore")

    p256dh: str = Field(min_length=16, max_length=200)
    auth: str = Field(min_length=8, max_length=100)


class PushSubscriptionIn(BaseModel):
    """A browser ``PushSubscription`` as ``toJSON()`` gives it."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(min_length=8, max_length=2000)
    keys: PushKeys


class PushSubscribed(BaseModel):
    """The answer to a registered subscription."""

    devices: int


class VapidPublicKey(BaseModel):
    """The key the browser needs as ``applicationServerKey``."""

    public_key: str


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_vapid(settings: NotificationSettings) -> Vapid02 | None:
    """The VAPID key pair from settings, or from (a newly created) key file; None if neither."""
    if settings.vapid_private_key is not None:
        return Vapid02.from_string(settings.vapid_private_key.get_secret_value())
    path = settings.vapid_key_file
    if path is None:
        return None
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = Vapid02()
        fresh.generate_keys()
        # O_EXCL: of two instances starting together, one writes and both read its key.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(fresh.private_pem())
    return Vapid02.from_file(str(path))


def public_key_of(vapid: Vapid02) -> str:
    """The uncompressed public point, base64url, as browsers want it."""
    raw = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return _b64url(raw)


def endpoint_allowed(endpoint: str, *, hosts: list[str], allow_http: bool) -> bool:
    """Whether ``endpoint`` is on an allowed push service (``*.example.com`` matches below)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    host = (parts.hostname or "").lower()
    for allowed in hosts:
        allowed = allowed.lower()
        if allowed.startswith("*.") and host.endswith(allowed[1:]):
            return True
        if host == allowed:
            return True
    return False


class PushSubscriptions:
    """Each responder's push subscriptions, in the database.

    They are the only way to reach a phone whose app is in the background, so they are
    kept where Redis coming back empty cannot lose them; a push send reads them by
    primary key, once per delivery.
    """

    def __init__(self, sessions: SessionFactory, *, clock: Clock, sqlite_db: bool) -> None:
        self._sessions = sessions
        self._clock = clock
        self._sqlite = sqlite_db

    @staticmethod
    def _field(endpoint: str) -> str:
        return hashlib.sha256(endpoint.encode()).hexdigest()[:32]

    async def add(self, responder_id: str, subscription: PushSubscriptionIn) -> int:
        """Keep the subscription (a repeat replaces it); answers how many devices there are."""
        field = self._field(subscription.endpoint)
        table: Table = PushSubscriptionRow.__table__  # type: ignore[attr-defined]
        insert = upsert_insert(table, sqlite_db=self._sqlite)
        upsert = insert.values(
            responder_id=responder_id,
            endpoint_key=field,
            subscription=subscription.model_dump_json(),
            updated_at=self._clock.now(),
        ).on_conflict_do_update(
            index_elements=[table.c.responder_id, table.c.endpoint_key],
            set_={
                "subscription": insert.excluded.subscription,
                "updated_at": insert.excluded.updated_at,
            },
        )
        async with transaction(self._sessions) as session:
            await session.exec(upsert)
            held = (
                await session.exec(
                    select(PushSubscriptionRow.endpoint_key)
                    .where(PushSubscriptionRow.responder_id == responder_id)
                    .order_by(col(PushSubscriptionRow.updated_at).desc())
                )
            ).all()
            others = [f for f in held if f != field]
            # A responder has a handful of phones at most; the new one always stays.
            surplus = others[max(0, MAX_DEVICES - 1) :]
            if surplus:
                await session.exec(
                    delete(PushSubscriptionRow).where(
                        col(PushSubscriptionRow.responder_id) == responder_id,
                        col(PushSubscriptionRow.endpoint_key).in_(surplus),
                    )
                )
        return len(held) - len(surplus)

    async def all(self, responder_id: str) -> list[PushSubscriptionIn]:
        """The responder's subscriptions."""
        async with self._sessions() as session:
            held = (
                await session.exec(
                    select(PushSubscriptionRow.subscription).where(
                        PushSubscriptionRow.responder_id == responder_id
                    )
                )
            ).all()
        return [PushSubscriptionIn.model_validate_json(v) for v in held]

    async def remove(self, responder_id: str, endpoint: str) -> None:
        """Forget one device."""
        async with transaction(self._sessions) as session:
            await session.exec(
                delete(PushSubscriptionRow).where(
                    col(PushSubscriptionRow.responder_id) == responder_id,
                    col(PushSubscriptionRow.endpoint_key) == self._field(endpoint),
                )
            )

    async def adopt_from_redis(self, redis: Redis) -> int:
        """Move subscriptions an older version kept in Redis into the database (once)."""
        moved = 0
        async for key in redis.scan_iter(match=f"{LEGACY_PREFIX}*", count=500):
            name = key.decode() if isinstance(key, bytes) else str(key)
            for value in (await redis.hgetall(name)).values():
                try:
                    subscription = PushSubscriptionIn.model_validate_json(value)
                except ValueError:
                    continue
                await self.add(name.removeprefix(LEGACY_PREFIX), subscription)
                moved += 1
            await redis.delete(name)
        return moved


@dataclass(frozen=True)
class PushSetup:
    """What the subscription routes need: the store, the public key and the host rules."""

    subscriptions: PushSubscriptions
    public_key: str
    hosts: list[str]
    allow_http: bool


def push_payload(message: str) -> str:
    """The message as pushed: whole if small, else the fields the phone needs to wake up."""
    if len(message.encode()) <= MAX_PAYLOAD_BYTES:
        return message
    full: dict[str, Any] = json.loads(message)
    keep = ("type", "event_id", "incident_id", "offer_id", "category", "expires_at", "eta_s")
    return json.dumps({k: full.get(k) for k in keep})


class PushChannel:
    """Sends a delivery as an encrypted Web Push message to each of the recipient's devices."""

    name = "push"

    def __init__(
        self,
        subscriptions: PushSubscriptions,
        *,
        vapid: Vapid02,
        subject: str,
        ttl_s: int,
        timeout_s: float,
    ) -> None:
        self._subscriptions = subscriptions
        self._vapid = vapid
        self._subject = subject
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s

    def _post(self, subscription: PushSubscriptionIn, data: str) -> None:
        webpush(
            subscription_info=subscription.model_dump(),
            data=data,
            vapid_private_key=self._vapid,
            # pywebpush adds ``aud`` and ``exp`` to the dict it is given: a fresh one each time.
            vapid_claims={"sub": self._subject},
            ttl=self._ttl_s,
            timeout=self._timeout_s,
        )

    async def send(self, delivery: Delivery) -> None:
        """One encrypted POST per device; a device the push service says is gone is dropped."""
        devices = await self._subscriptions.all(delivery.recipient)
        if not devices:
            return  # Nobody subscribed: the stream (and SMS, if on) carry the message.
        data = push_payload(delivery.message)
        failures: list[str] = []
        for device in devices:
            try:
                await asyncio.to_thread(self._post, device, data)
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (404, 410):
                    await self._subscriptions.remove(delivery.recipient, device.endpoint)
                    continue
                failures.append(f"push service answered {status}")
            except Exception as exc:  # requests' errors: connection refused, timeout, ...
                failures.append(f"{type(exc).__name__}")
        if failures and len(failures) == len(devices):
            raise DeliveryError("; ".join(failures))


async def _setup(notifier: NotifierDep) -> PushSetup:
    if notifier.push is None:
        # Off by configuration, not broken: nothing here to find, and nothing to retry.
        raise NotFound("Web Push is not configured here", code="push_unavailable")
    return notifier.push


PushDep = Annotated[PushSetup, Depends(_setup)]


@router.get(
    "/push/vapid-public-key",
    response_model=VapidPublicKey,
    responses=error_responses(404, notes={404: "Web Push is not configured here"}),
)
async def vapid_public_key(setup: PushDep) -> VapidPublicKey:
    """The server's VAPID public key, for the browser's ``pushManager.subscribe``."""
    return VapidPublicKey(public_key=setup.public_key)


@router.post(
    "/responders/{responder_id}/push-subscriptions",
    status_code=201,
    response_model=PushSubscribed,
    responses=error_responses(
        401, 403, 404, 413, 422, notes={404: "Web Push is not configured here"}
    ),
)
async def add_push_subscription(
    responder_id: uuid.UUID, body: PushSubscriptionIn, principal: CurrentPrincipal, setup: PushDep
) -> PushSubscribed:
    """Register this phone for Web Push (that responder only)."""
    require_self_or(principal, role=Role.RESPONDER, subject=str(responder_id), others=())
    if not endpoint_allowed(body.endpoint, hosts=setup.hosts, allow_http=setup.allow_http):
        raise Invalid("not a known push service", details={"field": "endpoint"})
    devices = await setup.subscriptions.add(str(responder_id), body)
    return PushSubscribed(devices=devices)


def build_push(
    settings: NotificationSettings, sessions: SessionFactory, clock: Clock
) -> tuple[PushSetup, PushChannel] | None:
    """The routes' setup and the channel, if push is on and VAPID keys are available."""
    if "push" not in settings.responder_channels:
        return None
    vapid = load_vapid(settings)
    if vapid is None:
        log.warning("push is in RESPONDER_CHANNELS but no VAPID key is configured; it is off")
        return None
    subscriptions = PushSubscriptions(
        sessions, clock=clock, sqlite_db=is_sqlite(settings.database_url)
    )
    setup = PushSetup(
        subscriptions=subscriptions,
        public_key=public_key_of(vapid),
        hosts=list(settings.push_endpoint_hosts),
        allow_http=settings.push_allow_http,
    )
    channel = PushChannel(
        subscriptions,
        vapid=vapid,
        subject=settings.vapid_subject,
        ttl_s=settings.push_ttl_s,
        timeout_s=settings.webhook_timeout_s,
    )
    return setup, channel
