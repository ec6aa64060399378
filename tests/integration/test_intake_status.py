"""The reporter's view against the real broker and Redis: incident events reach the
reporter's live stream, and a report saved while the broker is away still goes out."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from services.intake.app import create_app
from services.intake.models import OUTBOX
from services.intake.settings import IntakeSettings
from shared.events import (
    REPORTS,
    Event,
    GeoPoint,
    IncidentOpened,
    IncidentResolved,
    OfferAccepted,
    ReportMerged,
    ResponderOffered,
    StageTarget,
    UnitStatusChanged,
)
from shared.kafka import KafkaPublisher, ensure_topics, publish_event
from tests.harness import Infra, RunningApp, TopicReader, eventually, serve
from tools.embedded import Component, start_broker

THEFT = {"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}
HERE = GeoPoint(lat=22.54, lon=114.05)


async def _publish(infra: Infra, *events: Event) -> None:
    """Publish events on their topics as dispatch would."""
    publisher = KafkaPublisher(infra.kafka, client_id="test-dispatch")
    await publisher.start()
    try:
        await publisher.wait_connected(10)
        for event in events:
            await publish_event(publisher, event)
    finally:
        await publisher.stop()


def _opened(incident_id: uuid.UUID, report_id: str) -> IncidentOpened:
    return IncidentOpened(
        incident_id=incident_id,
        report_id=uuid.UUID(report_id),
        category="theft",
        priority=2,
        location=HERE,
        received_at=datetime.now(UTC),
        targets=(StageTarget(stage="T1", label="respond", target_s=60),),
    )


async def _events(lines: AsyncIterator[str], count: int) -> list[dict[str, Any]]:
    """Read ``count`` server-sent events: their data, with the event id as ``_id``."""
    found: list[dict[str, Any]] = []
    data: str | None = None
    event_id: str | None = None
    async for line in lines:
        if line.startswith("data:"):
            data = line[len("data:") :].strip()
        elif line.startswith("id:"):
            event_id = line[len("id:") :].strip()
        elif line == "" and data is not None:
            found.append({**json.loads(data), "_id": event_id})
            data = event_id = None
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {len(found)} of {count} events")


async def _post(intake: RunningApp) -> dict[str, Any]:
    async with intake.client() as client:
        answer = await client.post("/v1/reports", json=THEFT)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_incident_changes_reach_the_reporters_stream(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        posted = await _post(intake)
        report_id, token = posted["report_id"], posted["tracking_token"]
        incident_id, responder_id = uuid.uuid4(), uuid.uuid4()
        stream = f"/v1/reports/{report_id}/stream"

        # EventSource cannot set headers, so the token rides in the query.
        async with (
            intake.client() as client,
            client.stream("GET", stream, params={"access_token": token}) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            [received] = await _events(lines, 1)
            assert received["status"] == "received"
            assert received["entry"]["step"] == "received"

            await _publish(
                infra,
                _opened(incident_id, report_id),
                ResponderOffered(
                    incident_id=incident_id,
                    offer_id=uuid.uuid4(),
                    responder_id=responder_id,
                    kind="volunteer",
                    category="theft",
                    location=HERE,
                    distance_m=300.0,
                    eta_s=72.0,
                    expires_at=datetime.now(UTC),
                ),
                OfferAccepted(
                    incident_id=incident_id,
                    offer_id=uuid.uuid4(),
                    responder_id=responder_id,
                    kind="volunteer",
                    eta_s=72.0,
                ),
            )
            dispatched, assigned = await _events(lines, 2)
            assert dispatched["entry"]["step"] == "dispatched"
            assert assigned["status"] == "responder_assigned"
            assert assigned["entry"]["responder_kind"] == "volunteer"
            assert assigned["entry"]["eta_s"] == 72.0
            assert str(responder_id) not in json.dumps(assigned)

            await _publish(
                infra,
                UnitStatusChanged(
                    incident_id=incident_id,
                    responder_id=responder_id,
                    kind="volunteer",
                    status="on_scene",
                ),
            )
            [on_scene] = await _events(lines, 1)
            assert on_scene["status"] == "on_scene"

        # A reconnect with Last-Event-ID resumes after the last step it saw.
        async with (
            intake.client(token) as client,
            client.stream("GET", stream, headers={"Last-Event-ID": dispatched["_id"]}) as again,
        ):
            resumed = await _events(again.aiter_lines(), 2)
        assert [e["entry"]["step"] for e in resumed] == ["responder_assigned", "on_scene"]

        await _publish(
            infra, IncidentResolved(incident_id=incident_id, resolved_at=datetime.now(UTC))
        )
        async with intake.client(token) as client:

            async def resolved() -> dict[str, Any] | None:
                view: dict[str, Any] = (await client.get(f"/v1/reports/{report_id}")).json()
                return view if view["status"] == "resolved" else None

            view = await eventually(resolved)
            too_late = await client.post(f"/v1/reports/{report_id}/cancel")
        assert [s["step"] for s in view["timeline"]] == [
            "received",
            "dispatched",
            "responder_assigned",
            "on_scene",
            "resolved",
        ]
        assert str(responder_id) not in json.dumps(view)
        assert too_late.status_code == 409


async def test_a_report_merged_into_a_running_incident_catches_up(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        first, second = await _post(intake), await _post(intake)
        incident_id, responder_id = uuid.uuid4(), uuid.uuid4()
        await _publish(
            infra,
            _opened(incident_id, first["report_id"]),
            OfferAccepted(
                incident_id=incident_id,
                offer_id=uuid.uuid4(),
                responder_id=responder_id,
                kind="patrol",
                eta_s=150.0,
            ),
            ReportMerged(incident_id=incident_id, report_id=uuid.UUID(second["report_id"])),
        )
        async with intake.client(second["tracking_token"]) as client:

            async def caught_up() -> dict[str, Any] | None:
                view: dict[str, Any] = (
                    await client.get(f"/v1/reports/{second['report_id']}")
                ).json()
                return view if view["status"] == "responder_assigned" else None

            view = await eventually(caught_up)
        assert view["timeline"][-1] == {
            "step": "responder_assigned",
            "at": view["timeline"][-1]["at"],
            "responder_kind": "patrol",
            "eta_s": 150.0,
        }


async def test_a_report_saved_while_the_broker_is_down_goes_out_once_it_is_back(
    broker: Component, redis_server: Component, tmp_path: Path
) -> None:
    await ensure_topics(broker.url)
    infra = Infra(kafka=broker.url, redis_url=redis_server.url, tmp=str(tmp_path))
    replacement: Component | None = None
    try:
        async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
            broker.stop()
            posted = await _post(intake)  # saved with its event in the outbox: still a 202

            pending = (
                select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
            )

            async def waiting() -> int:
                async with intake.app.state.runtime.sessions() as session:
                    return int((await session.exec(pending)).one())

            assert await waiting() == 1

            # A new broker on the same address; it starts empty, so the topics are made again.
            replacement = start_broker(broker.port, log_dir=tmp_path / "replacement")
            await ensure_topics(replacement.url)
            reader = TopicReader(replacement.url, REPORTS)
            await reader.wait_for(
                lambda e: e.payload.get("report_id") == posted["report_id"], timeout=60
            )
            await eventually(lambda: _is_zero(waiting()), timeout=30)
            on_topic = await reader.read_all()
            # At least once: the relay may also republish it when it notices the new broker
            # lost its topics, but every copy is the same event, which consumers dedupe.
            assert {(e.type, e.payload["report_id"]) for e in on_topic} == {
                ("ReportReceived", posted["report_id"])
            }
            assert len({e.event_id for e in on_topic}) == 1
    finally:
        # Stopped only after intake, which would otherwise spend its shutdown waiting for it.
        if replacement is not None:
            replacement.stop()


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0
