"""Notification's API on the real broker and Redis: reporter and dispatcher webhooks,
the dispatchers' stream, who may read the delivery log, and work that survives a restart."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx

from services.notification.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from shared.auth import Role
from shared.events import (
    Envelope,
    GeoPoint,
    IncidentOpened,
    StageTarget,
    TargetBreached,
    UnitStatusChanged,
)
from tests.harness import Infra, eventually, serve
from tests.integration.notification_support import (
    WEBHOOK_SECRET,
    Receiver,
    SseReader,
    delivery_log,
    dispatch_publisher,
    notification,
    offer,
    publish,
    register_webhook,
    serve_on,
    token,
    wait_sent,
)
from tools.embedded import free_port


def opened(incident_id: uuid.UUID, report_id: uuid.UUID) -> IncidentOpened:
    """An incident opened from one report."""
    return IncidentOpened(
        incident_id=incident_id,
        report_id=report_id,
        category="dispute",
        priority=2,
        location=GeoPoint(lat=22.54, lon=114.05),
        received_at=datetime.now(UTC),
        targets=(StageTarget(stage="T1", label="respond", target_s=60),),
    )


async def test_a_reporters_app_hears_status_updates_on_its_webhook(infra: Infra) -> None:
    receiver = Receiver()
    report, incident = uuid.uuid4(), uuid.uuid4()
    async with (
        serve(receiver.app()) as hook,
        notification(infra) as app,
        dispatch_publisher(infra) as publisher,
    ):
        url = f"{hook.base_url}/hook"
        other_report = await register_webhook(
            app,
            url=url,
            audience="reporter",
            report_id=str(uuid.uuid4()),
            bearer=token(Role.REPORTER, str(report)),
        )
        own = await register_webhook(
            app,
            url=url,
            audience="reporter",
            report_id=str(report),
            bearer=token(Role.REPORTER, str(report)),
        )
        assert own.status_code == 201, own.text

        responder = uuid.uuid4()
        await publish(publisher, Envelope.wrap(opened(incident, report)))
        await publish(
            publisher,
            Envelope.wrap(
                UnitStatusChanged(
                    incident_id=incident,
                    responder_id=responder,
                    kind="volunteer",
                    status="on_scene",
                )
            ),
        )
        await wait_sent(app, 1, channel="webhook", incident_id=str(incident))

    assert other_report.status_code == 403
    [(headers, body)] = receiver.accepted
    assert verify(
        WEBHOOK_SECRET, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()]
    )
    update = json.loads(body)
    assert (update["type"], update["status"], update["kind"]) == (
        "status_update",
        "on_scene",
        "volunteer",
    )
    assert str(responder) not in body.decode()


async def test_dispatchers_see_breaches_on_their_stream(infra: Infra) -> None:
    incident = uuid.uuid4()
    async with (
        notification(infra) as app,
        dispatch_publisher(infra) as publisher,
        httpx.AsyncClient(base_url=app.base_url, timeout=10) as client,
    ):
        responder_token = token(Role.RESPONDER, str(uuid.uuid4()))
        refused = await client.get(
            "/v1/dispatchers/stream", headers={"authorization": f"Bearer {responder_token}"}
        )
        headers = {"authorization": f"Bearer {token(Role.DISPATCHER, 'desk-1')}"}
        async with client.stream("GET", "/v1/dispatchers/stream", headers=headers) as answer:
            reader = SseReader(answer)
            breach = TargetBreached(
                incident_id=incident, stage="T3", target_s=180, category="theft"
            )
            await publish(publisher, Envelope.wrap(breach))
            alert = await reader.next()
            await reader.close()
    assert refused.status_code == 403
    assert alert.event == "target_breached"
    assert (alert.data["incident_id"], alert.data["stage"]) == (str(incident), "T3")


async def test_only_dispatchers_and_operators_read_the_delivery_log(infra: Infra) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with notification(infra) as app, dispatch_publisher(infra) as publisher:
        await publish(publisher, Envelope.wrap(offer(responder_id=alice)))
        await publish(publisher, Envelope.wrap(offer(responder_id=bob)))
        await wait_sent(app, 2)
        answers = {}
        for name, bearer in {
            "anonymous": None,
            "responder": token(Role.RESPONDER, str(alice)),
            "reporter": token(Role.REPORTER, str(uuid.uuid4())),
            "operator": token(Role.OPERATOR, "ops"),
        }.items():
            async with app.client(bearer) as client:
                answers[name] = await client.get(
                    "/v1/deliveries", params={"responder_id": str(alice)}
                )

    assert answers["anonymous"].status_code == 401
    assert answers["responder"].status_code == 403
    assert answers["reporter"].status_code == 403
    assert answers["operator"].status_code == 200
    [entry] = answers["operator"].json()
    assert (entry["responder_id"], entry["status"], entry["channel"]) == (
        str(alice),
        "sent",
        "stream",
    )
    assert entry["attempts"][0]["outcome"] == "sent"
    assert entry["attempts"][0]["latency_ms"] >= 0


async def test_a_pending_webhook_is_resumed_after_a_restart(infra: Infra) -> None:
    port = free_port()  # nothing listens here until after the restart
    database = infra.sqlite_url("notification-shared")
    # The default lease is minutes: the stopping instance hands its work back at once.
    settings = {"database_url": database, "webhook_max_attempts": 20}
    breach = TargetBreached(incident_id=uuid.uuid4(), stage="T1", target_s=60, category="dispute")
    async with notification(infra, **settings) as first, dispatch_publisher(infra) as publisher:
        answer = await register_webhook(
            first,
            url=f"http://127.0.0.1:{port}/hook",
            audience="dispatcher",
            bearer=token(Role.DISPATCHER, "desk-1"),
        )
        assert answer.status_code == 201, answer.text
        await publish(publisher, Envelope.wrap(breach))

        async def retrying() -> bool:
            log = await delivery_log(first, incident_id=str(breach.incident_id))
            return any(d["channel"] == "webhook" and d["attempts"] for d in log)

        await eventually(retrying, timeout=10)

    receiver = Receiver()
    async with (
        serve_on(receiver.app(), port),
        notification(infra, **settings) as second,
    ):
        [delivered] = await wait_sent(
            second, 1, channel="webhook", incident_id=str(breach.incident_id)
        )

    assert len(receiver.accepted) == 1
    assert json.loads(receiver.accepted[0][1])["incident_id"] == str(breach.incident_id)
    outcomes = [a["outcome"] for a in delivered["attempts"]]
    assert outcomes[-1] == "sent"
    assert set(outcomes[:-1]) == {"retry"}
