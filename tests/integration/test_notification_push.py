"""Web Push: an offer reaches a subscribed phone as an encrypted push, signed with VAPID.

The push service is a real HTTP server on 127.0.0.1 standing in for FCM or Mozilla's:
it records each POST, and the test checks the VAPID token with the server's public key
and decrypts the body (RFC 8291) with the phone's private key, as the browser would.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

from services.notification.app import create_app
from shared.auth import Role
from shared.events import Envelope
from tests.harness import Infra, eventually, serve
from tests.integration.notification_support import (
    delivery_log,
    dispatch_publisher,
    notification,
    notification_settings,
    offer,
    publish,
    serve_on,
    token,
)
from tools.embedded import free_port

VAPID_SUBJECT = "mailto:ops@example.test"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Phone:
    """A browser's push subscription keys."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def keys(self) -> dict[str, str]:
        public = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return {"p256dh": b64url(public), "auth": b64url(self.auth)}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        message: dict[str, Any] = json.loads(plain)
        return message


@dataclass
class PushService:
    """What the local push service received, per path."""

    url: str
    received: dict[str, list[tuple[dict[str, str], bytes]]] = field(default_factory=dict)


@asynccontextmanager
async def push_service() -> AsyncIterator[PushService]:
    """A push service on a real port: ``/gone/...`` answers 410, everything else 201."""
    app = FastAPI()
    port = free_port()
    service = PushService(url=f"http://127.0.0.1:{port}")

    @app.post("/{path:path}")
    async def receive(path: str, request: Request) -> Response:
        service.received.setdefault(path, []).append((dict(request.headers), await request.body()))
        return Response(status_code=410 if path.startswith("gone/") else 201)

    async with serve_on(app, port):
        yield service


def push_overrides(tmp: str) -> dict[str, Any]:
    return {
        "responder_channels": ["stream", "push"],
        "push_endpoint_hosts": ["127.0.0.1"],
        "push_allow_http": True,
        "vapid_key_file": Path(tmp) / "vapid.pem",
        "vapid_subject": VAPID_SUBJECT,
    }


async def test_an_offer_arrives_as_an_encrypted_push_signed_with_vapid(infra: Infra) -> None:
    responder = uuid.uuid4()
    phone = Phone()
    async with (
        push_service() as pusher,
        notification(infra, **push_overrides(infra.tmp)) as app,
        dispatch_publisher(infra) as publisher,
    ):
        async with app.client() as anyone:
            key = (await anyone.get("/v1/push/vapid-public-key")).json()["public_key"]
        endpoint = f"{pusher.url}/push/{uuid.uuid4()}"
        async with app.client(token(Role.RESPONDER, str(responder))) as own:
            subscribed = await own.post(
                f"/v1/responders/{responder}/push-subscriptions",
                json={"endpoint": endpoint, "expirationTime": None, "keys": phone.keys()},
            )
        assert subscribed.status_code == 201, subscribed.text
        assert subscribed.json() == {"devices": 1}

        sent = offer(responder_id=responder)
        await publish(publisher, Envelope.wrap(sent))
        path = endpoint.removeprefix(pusher.url + "/")
        await eventually(lambda: bool(pusher.received.get(path)), timeout=15)

        headers, body = pusher.received[path][0]
        assert headers["content-encoding"] == "aes128gcm"
        assert int(headers["ttl"]) > 0
        found = re.fullmatch(r"vapid t=([^,\s]+),\s*k=([^,\s]+)", headers["authorization"])
        assert found, headers["authorization"]
        vapid_token, vapid_key = found.groups()
        assert vapid_key == key
        server_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), unb64url(vapid_key)
        )
        claims = jwt.decode(vapid_token, server_key, algorithms=["ES256"], audience=pusher.url)
        assert claims["sub"] == VAPID_SUBJECT

        message = phone.decrypt(body)
        assert message["type"] == "offer"
        assert message["offer_id"] == str(sent.offer_id)
        assert message["category"] == "dispute"
        assert message["address"] == "1 Harbour Road"

        log = await eventually(lambda: _sent_on(app, "push", str(responder)), timeout=15)
        assert log


async def _sent_on(app: Any, channel: str, responder: str) -> list[dict[str, Any]]:
    rows = await delivery_log(app, responder_id=responder)
    return [r for r in rows if r["channel"] == channel and r["status"] == "sent"]


async def test_a_phone_the_push_service_says_is_gone_is_forgotten(infra: Infra) -> None:
    responder = uuid.uuid4()
    live, gone = Phone(), Phone()
    async with (
        push_service() as pusher,
        notification(infra, **push_overrides(infra.tmp)) as app,
        dispatch_publisher(infra) as publisher,
    ):
        live_path, gone_path = f"push/{uuid.uuid4()}", f"gone/{uuid.uuid4()}"
        async with app.client(token(Role.RESPONDER, str(responder))) as own:
            for path, phone in ((live_path, live), (gone_path, gone)):
                answer = await own.post(
                    f"/v1/responders/{responder}/push-subscriptions",
                    json={"endpoint": f"{pusher.url}/{path}", "keys": phone.keys()},
                )
                assert answer.status_code == 201, answer.text
        for count in (1, 2):
            await publish(publisher, Envelope.wrap(offer(responder_id=responder)))

            def pushed(n: int = count) -> bool:
                return len(pusher.received.get(live_path, [])) == n

            await eventually(pushed, timeout=15)
        # The uninstalled app's endpoint got the first offer only; then it was dropped.
        assert len(pusher.received[gone_path]) == 1


async def test_only_the_responder_subscribes_and_only_to_a_known_push_service(
    infra: Infra,
) -> None:
    responder = uuid.uuid4()
    phone = Phone()
    async with notification(
        infra, responder_channels=["stream", "push"], vapid_key_file=Path(infra.tmp) / "v.pem"
    ) as app:
        body = {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": phone.keys()}
        async with app.client(token(Role.RESPONDER, str(uuid.uuid4()))) as stranger:
            other = await stranger.post(f"/v1/responders/{responder}/push-subscriptions", json=body)
        assert other.status_code == 403, other.text
        async with app.client(token(Role.RESPONDER, str(responder))) as own:
            inside = await own.post(
                f"/v1/responders/{responder}/push-subscriptions",
                json={**body, "endpoint": "http://10.0.0.8:8080/admin"},
            )
            assert inside.status_code == 422, inside.text
            ok = await own.post(f"/v1/responders/{responder}/push-subscriptions", json=body)
            assert ok.status_code == 201, ok.text


async def test_without_push_configured_the_routes_say_so(infra: Infra) -> None:
    async with notification(infra) as app, app.client() as anyone:
        answer = await anyone.get("/v1/push/vapid-public-key")
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "push_unavailable"


async def test_a_push_subscription_outlives_redis_coming_back_empty(infra: Infra) -> None:
    responder = uuid.uuid4()
    phone = Phone()
    settings = notification_settings(infra, **push_overrides(infra.tmp))
    async with push_service() as pusher, dispatch_publisher(infra) as publisher:
        path = f"push/{uuid.uuid4()}"
        async with (
            serve(create_app(settings)) as first,
            first.client(token(Role.RESPONDER, str(responder))) as own,
        ):
            answer = await own.post(
                f"/v1/responders/{responder}/push-subscriptions",
                json={"endpoint": f"{pusher.url}/{path}", "keys": phone.keys()},
            )
            assert answer.status_code == 201, answer.text
        redis = Redis.from_url(infra.redis_url)
        try:
            await redis.flushall()
        finally:
            await redis.aclose()

        # The app in the phone's background never subscribes again: the offer must find it.
        async with serve(create_app(settings)):
            sent = offer(responder_id=responder)
            await publish(publisher, Envelope.wrap(sent))
            await eventually(lambda: bool(pusher.received.get(path)), timeout=15)

    _, body = pusher.received[path][0]
    assert phone.decrypt(body)["offer_id"] == str(sent.offer_id)


async def test_subscriptions_an_older_version_kept_in_redis_are_kept(infra: Infra) -> None:
    responder = uuid.uuid4()
    phone = Phone()
    async with push_service() as pusher, dispatch_publisher(infra) as publisher:
        path = f"push/{uuid.uuid4()}"
        subscription = {"endpoint": f"{pusher.url}/{path}", "keys": phone.keys()}
        redis = Redis.from_url(infra.redis_url)
        try:
            await redis.hset(f"notification:push:{responder}", "a1b2", json.dumps(subscription))
        finally:
            await redis.aclose()

        async with notification(infra, **push_overrides(infra.tmp)):
            await publish(publisher, Envelope.wrap(offer(responder_id=responder)))
            await eventually(lambda: bool(pusher.received.get(path)), timeout=15)
