"""Helpers for the notification tests: a publisher standing in for dispatch, an SSE
reader for a responder's stream, and a webhook receiver served on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.notification.app import create_app
from services.notification.egress import Resolver
from services.notification.settings import NotificationSettings
from shared.auth import Role, mint_token
from shared.events import Envelope, GeoPoint, ResponderOffered
from shared.kafka import KafkaPublisher
from tests.harness import AUTH_SECRET, Infra, RunningApp, eventually, serve

WEBHOOK_SECRET = "webhook-test-secret-0123456789abcdef"
DISPATCH_URL = "https://dispatch.example.test"
# The test receivers listen on loopback over http, which webhooks may reach only when
# the allowlist says so; the tests of the address rules start with empty allowlists.
LOCAL_RECEIVERS = ["http://127.0.0.1"]


def notification_settings(infra: Infra, **overrides: Any) -> NotificationSettings:
    """Settings with short retry delays, for tests."""
    values: dict[str, Any] = {
        "dispatch_public_url": DISPATCH_URL,
        "webhook_signing_secret": WEBHOOK_SECRET,
        "webhook_max_attempts": 4,
        "webhook_backoff_initial_s": 0.05,
        "webhook_backoff_max_s": 0.2,
        "webhook_backoff_jitter_s": 0.02,
        "resume_interval_s": 0.5,
        "stream_poll_s": 30.0,
        "stream_ping_s": 1.0,
        "webhook_allowed_hosts": LOCAL_RECEIVERS,
        "webhook_reporter_allowed_hosts": LOCAL_RECEIVERS,
    }
    values.update(overrides)
    return infra.settings(NotificationSettings, "notification", **values)


@contextlib.asynccontextmanager
async def notification(infra: Infra, **overrides: Any) -> AsyncIterator[RunningApp]:
    """The notification service, served in-process."""
    async with serve(create_app(notification_settings(infra, **overrides))) as app:
        yield app


@contextlib.asynccontextmanager
async def notification_with_dns(
    infra: Infra, resolver: Resolver, **overrides: Any
) -> AsyncIterator[RunningApp]:
    """The notification service, resolving webhook hosts with ``resolver``."""
    app = create_app(notification_settings(infra, **overrides), resolver=resolver)
    async with serve(app) as running:
        yield running


@contextlib.asynccontextmanager
async def dispatch_publisher(infra: Infra) -> AsyncIterator[KafkaPublisher]:
    """A producer standing in for dispatch."""
    publisher = KafkaPublisher(infra.kafka, client_id="test-dispatch")
    await publisher.start()
    try:
        await publisher.wait_connected(10)
        yield publisher
    finally:
        await publisher.stop()


async def publish(publisher: KafkaPublisher, envelope: Envelope) -> None:
    """Publish an envelope on its event's topic, keyed like dispatch does."""
    event = envelope.event()
    await publisher.publish(envelope, topic=event.topic, key=event.key)


def offer(*, responder_id: uuid.UUID, incident_id: uuid.UUID | None = None) -> ResponderOffered:
    """An offer as dispatch would publish it."""
    return ResponderOffered(
        incident_id=incident_id or uuid.uuid4(),
        offer_id=uuid.uuid4(),
        responder_id=responder_id,
        kind="volunteer",
        category="dispute",
        location=GeoPoint(lat=22.54, lon=114.05),
        address="1 Harbour Road",
        distance_m=240.0,
        eta_s=172.8,
        expires_at=datetime.now(UTC) + timedelta(seconds=30),
    )


def token(role: Role, subject: str) -> str:
    """A bearer token for the test stack."""
    return mint_token(secret=AUTH_SECRET, role=role, subject=subject)


async def delivery_log(app: RunningApp, **params: str) -> list[dict[str, Any]]:
    """The delivery log as a dispatcher sees it."""
    async with app.client(token(Role.DISPATCHER, "desk-1")) as client:
        answer = await client.get("/v1/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


@dataclass(frozen=True)
class Sse:
    """One server-sent event."""

    id: str
    event: str
    data: dict[str, Any]


class SseReader:
    """Reads a live SSE response in the background into a queue."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: asyncio.Queue[Sse] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if not line:
                if "data" in fields:
                    self.events.put_nowait(
                        Sse(
                            fields.get("id", ""),
                            fields.get("event", ""),
                            json.loads(fields["data"]),
                        )
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    async def next(self, timeout: float = 10) -> Sse:
        """The next event; fails the test if none comes within ``timeout``."""
        return await asyncio.wait_for(self.events.get(), timeout)

    async def close(self) -> None:
        """Stop reading."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self._task


@contextlib.asynccontextmanager
async def responder_stream(
    app: RunningApp, responder_id: uuid.UUID, *, last_event_id: str | None = None
) -> AsyncIterator[SseReader]:
    """A responder's live stream, opened with that responder's token."""
    headers = {"authorization": f"Bearer {token(Role.RESPONDER, str(responder_id))}"}
    if last_event_id:
        headers["last-event-id"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=app.base_url, timeout=httpx.Timeout(10)) as client,
        client.stream("GET", f"/v1/responders/{responder_id}/stream", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        reader = SseReader(answer)
        try:
            yield reader
        finally:
            await reader.close()


@dataclass
class Receiver:
    """A webhook receiver: fails its first ``fail_first`` calls, or all of them, and can
    hold every call until ``release`` is set."""

    fail_first: int = 0
    always_fail: bool = False
    release: asyncio.Event | None = None
    calls: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The calls answered with success."""
        return [(h, b) for h, b, status in self.calls if status == 200]

    def app(self) -> FastAPI:
        """The receiver's ASGI app."""
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            self.arrived.set()
            if self.release is not None:
                await self.release.wait()
            failing = self.always_fail or len(self.calls) < self.fail_first
            status = 500 if failing else 200
            self.calls.append((dict(request.headers), body, status))
            return JSONResponse({"ok": not failing}, status_code=status)

        @app.get("/readyz")
        async def ready() -> dict[str, str]:
            return {"status": "ready"}

        return app


async def register_webhook(
    app: RunningApp, *, url: str, audience: str, report_id: str | None = None, bearer: str
) -> httpx.Response:
    """``POST /v1/webhooks``."""
    body: dict[str, Any] = {"url": url, "audience": audience}
    if report_id is not None:
        body["report_id"] = report_id
    async with app.client(bearer) as client:
        return await client.post("/v1/webhooks", json=body)


async def wait_sent(
    app: RunningApp, count: int, *, channel: str | None = None, **params: str
) -> list[dict[str, Any]]:
    """Wait until the log holds ``count`` sent deliveries matching ``params`` (and channel)."""

    async def sent() -> list[dict[str, Any]]:
        rows = [
            d
            for d in await delivery_log(app, **params)
            if d["status"] == "sent" and channel in (None, d["channel"])
        ]
        return rows if len(rows) >= count else []

    result: list[dict[str, Any]] = await eventually(sent, timeout=15)
    return result


@contextlib.asynccontextmanager
async def serve_on(app: FastAPI, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on a chosen port (a receiver that comes up late); yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
