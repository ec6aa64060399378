"""Webhooks can't reach inside, on the real broker, Redis and database: refused at
registration and again at call time (after DNS, connecting only to the checked address),
capped per report, rate-limited, no redirects, answers cut off; the allowlist lets a
dispatch-room system on the internal network receive them. A pinned https call still
verifies the receiver's certificate against the URL's name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from services.notification.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryError,
    WebhookChannel,
    verify,
    webhook_client,
)
from services.notification.egress import EgressPolicy
from services.notification.models import Delivery
from shared.auth import Role
from shared.clock import SystemClock
from shared.events import Envelope, TargetBreached
from tests.fake_dns import FakeResolver
from tests.harness import Infra, RunningApp, eventually, serve
from tests.integration.notification_support import (
    WEBHOOK_SECRET,
    delivery_log,
    dispatch_publisher,
    notification,
    notification_with_dns,
    publish,
    register_webhook,
    token,
    wait_sent,
)
from tools.embedded import free_port

NO_ALLOWLIST: dict[str, Any] = {"webhook_allowed_hosts": [], "webhook_reporter_allowed_hosts": []}
DESK = token(Role.DISPATCHER, "desk-1")


def breach() -> TargetBreached:
    """A T1 breach as dispatch would publish it: dispatcher webhooks hear of it."""
    return TargetBreached(incident_id=uuid.uuid4(), stage="T1", target_s=60, category="dispute")


class Receivers:
    """A webhook receiver with a few bad habits, one per path."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.release = asyncio.Event()

    def app(self) -> FastAPI:
        """The receiver's ASGI app."""
        app = FastAPI()

        async def record(request: Request, name: str) -> None:
            self.calls.setdefault(name, []).append((dict(request.headers), await request.body()))

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            await record(request, "hook")
            return JSONResponse({"ok": True})

        @app.post("/redirect")
        async def redirect(request: Request) -> RedirectResponse:
            await record(request, "redirect")
            return RedirectResponse("/elsewhere", status_code=307)

        @app.post("/elsewhere")
        async def elsewhere(request: Request) -> JSONResponse:
            await record(request, "elsewhere")
            return JSONResponse({"ok": True})

        @app.post("/huge")
        async def huge(request: Request) -> StreamingResponse:
            await record(request, "huge")

            async def endless() -> AsyncIterator[bytes]:
                while not self.release.is_set():
                    yield b"x" * 65536
                    await asyncio.sleep(0)

            return StreamingResponse(endless(), media_type="application/octet-stream")

        @app.post("/slow")
        async def slow(request: Request) -> JSONResponse:
            await record(request, "slow")
            await self.release.wait()
            return JSONResponse({"ok": True})

        @app.get("/readyz")
        async def ready() -> dict[str, str]:
            return {"status": "ready"}

        return app


@contextlib.asynccontextmanager
async def receivers() -> AsyncIterator[tuple[Receivers, RunningApp]]:
    """The receiver, served on loopback; its held calls are released at the end."""
    receiver = Receivers()
    async with serve(receiver.app()) as running:
        try:
            yield receiver, running
        finally:
            receiver.release.set()


async def failed_delivery(app: RunningApp, incident_id: uuid.UUID) -> dict[str, Any]:
    """The incident's webhook delivery, once it has failed for good and been
    dead-lettered (the row is marked failed first, then the dead letter goes out)."""

    async def failed() -> list[dict[str, Any]]:
        log = await delivery_log(app, incident_id=str(incident_id))
        return [
            d
            for d in log
            if d["channel"] == "webhook" and d["status"] == "failed" and d["dead_lettered_at"]
        ]

    rows: list[dict[str, Any]] = await eventually(failed, timeout=15)
    return rows[0]


async def test_hooks_to_loopback_private_and_metadata_addresses_are_refused(
    infra: Infra,
) -> None:
    report_id = str(uuid.uuid4())
    reporter = token(Role.REPORTER, report_id)
    inside = [
        "http://127.0.0.1:8004/v1/deliveries",
        "https://127.0.0.1/hook",
        "https://10.0.0.5/hook",
        "https://192.168.1.1/hook",
        "https://100.64.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[fe80::1]/hook",
        "https://localhost/hook",
        "https://metadata.google.internal/computeMetadata/v1/",
    ]
    async with notification(infra, webhook_registrations_per_window=100, **NO_ALLOWLIST) as app:
        answers = [
            await register_webhook(
                app, url=url, audience="reporter", report_id=report_id, bearer=reporter
            )
            for url in inside
        ]
        desk = await register_webhook(
            app, url="https://10.0.0.5/hook", audience="dispatcher", bearer=DESK
        )
        plain_http = await register_webhook(
            app, url="http://93.184.216.34/hook", audience="dispatcher", bearer=DESK
        )

    for url, answer in zip(inside, answers, strict=True):
        assert answer.status_code == 422, (url, answer.text)
        assert answer.json()["error"]["code"] == "webhook_url_refused", url
    assert "loopback" in answers[1].json()["error"]["message"]
    assert "metadata" in answers[5].json()["error"]["message"]
    assert desk.status_code == 422
    assert "private" in desk.json()["error"]["message"]
    assert plain_http.status_code == 422
    assert "https" in plain_http.json()["error"]["message"]


async def test_a_report_takes_three_hooks_and_registrations_are_rate_limited(
    infra: Infra,
) -> None:
    report_id = str(uuid.uuid4())
    reporter = token(Role.REPORTER, report_id)
    async with notification(infra, **NO_ALLOWLIST) as app:
        hooks = [
            await register_webhook(
                app,
                url=f"https://93.184.216.34/hook-{n}",
                audience="reporter",
                report_id=report_id,
                bearer=reporter,
            )
            for n in range(4)
        ]
    assert [h.status_code for h in hooks] == [201, 201, 201, 409]
    assert hooks[3].json()["error"]["code"] == "too_many_webhooks"

    async with notification(infra, webhook_registrations_per_window=2, **NO_ALLOWLIST) as app:
        caller = token(Role.DISPATCHER, f"desk-{uuid.uuid4()}")
        # A refused registration counts too: registration is no way to probe the inside.
        answers = [
            await register_webhook(app, url=url, audience="dispatcher", bearer=caller)
            for url in ("https://10.1.1.1/h", "https://93.184.216.34/h", "https://93.184.216.34/h")
        ]
        other_desk = await register_webhook(
            app, url="https://93.184.216.34/h", audience="dispatcher", bearer=DESK
        )
    assert [a.status_code for a in answers] == [422, 201, 429]
    assert answers[2].json()["error"]["code"] == "rate_limited"
    assert int(answers[2].headers["retry-after"]) >= 1
    assert other_desk.status_code == 201


async def test_a_name_that_rebinds_to_loopback_is_refused_at_call_time_and_never_connected(
    infra: Infra,
) -> None:
    connections = 0

    async def count(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    dns = FakeResolver({"rebind.example.test": ["93.184.216.34"]})
    # http is allowed to the public block the name first resolves to, not to loopback.
    allow = {"webhook_allowed_hosts": ["http://93.184.216.0/24"]}
    try:
        async with (
            notification_with_dns(infra, dns, webhook_max_attempts=4, **allow) as app,
            dispatch_publisher(infra) as publisher,
        ):
            registered = await register_webhook(
                app,
                url=f"http://rebind.example.test:{port}/hook",
                audience="dispatcher",
                bearer=DESK,
            )
            assert registered.status_code == 201, registered.text

            dns.answers["rebind.example.test"] = ["127.0.0.1"]
            event = breach()
            await publish(publisher, Envelope.wrap(event))
            delivery = await failed_delivery(app, event.incident_id)
    finally:
        listener.close()
        await listener.wait_closed()

    assert connections == 0
    # Refused for good at the first attempt, not retried.
    [attempt] = delivery["attempts"]
    assert attempt["outcome"] == "failed"
    assert "loopback" in attempt["error"]
    assert delivery["dead_lettered_at"] is not None


async def test_the_allowlist_lets_a_dispatch_room_system_receive_signed_webhooks(
    infra: Infra,
) -> None:
    async with receivers() as (receiver, hook):
        configured = f"{hook.base_url}/hook"
        async with (
            notification(
                infra,
                dispatcher_webhook_url=configured,
                webhook_allowed_hosts=["http://127.0.0.1"],
                webhook_reporter_allowed_hosts=[],
            ) as app,
            dispatch_publisher(infra) as publisher,
        ):
            # The allowlist is the dispatcher audience's: a reporter still can't reach it.
            report_id = str(uuid.uuid4())
            reporter = await register_webhook(
                app,
                url=configured,
                audience="reporter",
                report_id=report_id,
                bearer=token(Role.REPORTER, report_id),
            )
            event = breach()
            envelope = Envelope.wrap(event)
            await publish(publisher, envelope)
            await wait_sent(app, 1, channel="webhook", incident_id=str(event.incident_id))

    assert reporter.status_code == 422
    [(headers, body)] = receiver.calls["hook"]
    assert headers["host"] == hook.base_url.removeprefix("http://")
    assert verify(
        WEBHOOK_SECRET, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()]
    )
    assert json.loads(body)["event_id"] == str(envelope.event_id)


async def test_redirects_are_not_followed_and_large_or_slow_answers_are_cut_off(
    infra: Infra,
) -> None:
    hook_ids: dict[str, str] = {}
    async with (
        receivers() as (receiver, hook),
        notification(infra, webhook_timeout_s=1.0, webhook_max_attempts=2) as app,
        dispatch_publisher(infra) as publisher,
    ):
        for path in ("redirect", "huge", "slow"):
            answer = await register_webhook(
                app, url=f"{hook.base_url}/{path}", audience="dispatcher", bearer=DESK
            )
            assert answer.status_code == 201, answer.text
            hook_ids[path] = answer.json()["webhook_id"]
        event = breach()
        await publish(publisher, Envelope.wrap(event))

        async def settled() -> dict[str, dict[str, Any]]:
            log = await delivery_log(app, incident_id=str(event.incident_id))
            hooks = {d["recipient"]: d for d in log if d["channel"] == "webhook"}
            done = len(hooks) == 3 and all(d["status"] != "pending" for d in hooks.values())
            return hooks if done else {}

        by_hook = await eventually(settled, timeout=20)

    redirected, huge, slow = (by_hook[hook_ids[p]] for p in ("redirect", "huge", "slow"))
    # A redirect is a permanent failure at the first attempt; its target is never called.
    assert redirected["status"] == "failed"
    [attempt] = redirected["attempts"]
    assert "redirects are not followed" in attempt["error"]
    assert "elsewhere" not in receiver.calls
    # The endless answer was a 200: cut off after the cap, and the delivery is sent.
    assert huge["status"] == "sent"
    assert len(receiver.calls["huge"]) == 1
    # The receiver that never answers: each attempt gives up at the time limit.
    assert slow["status"] == "failed"
    assert [a["outcome"] for a in slow["attempts"]] == ["retry", "failed"]
    assert all("no answer within" in a["error"] for a in slow["attempts"])


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` (and its key), signed by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def breach_delivery(url: str) -> Delivery:
    """A dispatcher webhook delivery to ``url``."""
    now = datetime.now(UTC)
    return Delivery(
        event_id=str(uuid.uuid4()),
        event_type="TargetBreached",
        channel="webhook",
        audience="dispatcher",
        recipient="configured",
        target=url,
        message=json.dumps({"type": "target_breached"}),
        occurred_at=now,
        created_at=now,
    )


async def test_a_pinned_https_call_verifies_the_certificate_against_the_name(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, "desk.example.test")
    receiver = Receivers()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    task = asyncio.create_task(server.serve())
    dns = FakeResolver({"desk.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]})
    client = webhook_client(
        connect_timeout_s=5, timeout_s=10, verify=ssl.create_default_context(cafile=str(cert))
    )
    channel = WebhookChannel(
        client,
        secret=WEBHOOK_SECRET,
        clock=SystemClock(),
        policies={
            "dispatcher": EgressPolicy.from_entries(["desk.example.test", "other.example.test"])
        },
        resolver=dns,
        timeout_s=10,
        max_response_bytes=1024,
    )
    try:
        await eventually(lambda: server.started, timeout=10)
        await channel.send(breach_delivery(f"https://desk.example.test:{port}/hook"))
        # Same address, another name: the certificate is for desk.example.test only.
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            await channel.send(breach_delivery(f"https://other.example.test:{port}/hook"))
    finally:
        await client.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    [(headers, body)] = receiver.calls["hook"]
    assert headers["host"] == f"desk.example.test:{port}"
    assert json.loads(body) == {"type": "target_breached"}
