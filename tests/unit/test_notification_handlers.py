"""Notification's handlers on a SQLite file: which deliveries each event produces,
and that a redelivered event never produces them twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlmodel import select

from services.notification.context import Notifier
from services.notification.egress import SystemResolver
from services.notification.handlers import HANDLERS
from services.notification.live import LiveHub
from services.notification.models import Delivery, NotificationTable, Webhook
from services.notification.service import Routing
from services.notification.settings import NotificationSettings
from shared import db
from shared.clock import FakeClock
from shared.events import (
    Envelope,
    Event,
    GeoPoint,
    IncidentOpened,
    IncidentResolved,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    ResponderOffered,
    StageTarget,
    UnitStatusChanged,
)
from shared.ratelimit import RedisRateLimiter

DISPATCH_URL = "https://dispatch.example.test"


@dataclass
class FakeWorkers:
    """Collects what the handlers hand over for sending."""

    submitted: list[Delivery] = field(default_factory=list)

    def submit(self, deliveries: Sequence[Delivery], *, leased: bool = False) -> None:
        self.submitted.extend(deliveries)

    def lease_for(self, channel: str) -> timedelta:
        return timedelta(seconds=10)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[db.SessionFactory]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/notification.db")
    await db.create_schema(engine, NotificationTable.metadata, schema=None)
    yield db.session_factory(engine)
    await engine.dispose()


def notifier(sessions: db.SessionFactory, workers: FakeWorkers, **routing: object) -> Notifier:
    # The handlers never touch Redis; the client is built but never connects.
    redis = Redis()
    return Notifier(
        settings=NotificationSettings(auth_secret="x" * 32, dispatch_public_url=DISPATCH_URL),
        sessions=sessions,
        redis=redis,
        workers=workers,
        routing=Routing(**routing),  # type: ignore[arg-type]
        hub=LiveHub(redis),
        limiter=RedisRateLimiter(redis, namespace="unit"),
        resolver=SystemResolver(),
        clock=FakeClock(),
    )


async def handle(ctx: Notifier, event: Event, envelope: Envelope | None = None) -> Envelope:
    envelope = envelope or Envelope.wrap(event)
    await HANDLERS[type(event)]([(event, envelope)], ctx)
    return envelope


def offered(incident_id: uuid.UUID, responder_id: uuid.UUID) -> ResponderOffered:
    return ResponderOffered(
        incident_id=incident_id,
        offer_id=uuid.uuid4(),
        responder_id=responder_id,
        kind="volunteer",
        category="dispute",
        location=GeoPoint(lat=22.5, lon=114.0),
        distance_m=100,
        eta_s=72,
        expires_at=datetime(2026, 1, 1, 8, 0, 30, tzinfo=UTC),
    )


async def all_deliveries(sessions: db.SessionFactory) -> list[Delivery]:
    async with sessions() as session:
        return list((await session.exec(select(Delivery))).all())


async def test_an_offer_becomes_one_pending_delivery_with_its_links(
    sessions: db.SessionFactory,
) -> None:
    workers = FakeWorkers()
    ctx = notifier(sessions, workers)
    event = offered(uuid.uuid4(), uuid.uuid4())
    await handle(ctx, event)

    [delivery] = workers.submitted
    assert (delivery.channel, delivery.recipient) == ("stream", str(event.responder_id))
    assert delivery.status == "pending"
    message = json.loads(delivery.message)
    assert message["accept_url"] == f"{DISPATCH_URL}/v1/offers/{event.offer_id}/accept"
    assert message["decline_url"] == f"{DISPATCH_URL}/v1/offers/{event.offer_id}/decline"
    assert message["expires_at"] == "2026-01-01T08:00:30+00:00"


async def test_a_redelivered_event_writes_no_second_delivery(sessions: db.SessionFactory) -> None:
    workers = FakeWorkers()
    ctx = notifier(sessions, workers, responder_channels=("stream", "sms"))
    envelope = await handle(ctx, offered(uuid.uuid4(), uuid.uuid4()))
    # As after a crash before the consumer marked the event handled.
    await handle(ctx, envelope.event(), envelope)

    rows = await all_deliveries(sessions)
    assert sorted(d.channel for d in rows) == ["sms", "stream"]
    # Still pending, so the repeat hands the same rows over again; the lease sends each once.
    assert {d.id for d in workers.submitted} == {d.id for d in rows}


async def test_closing_an_incident_stands_down_everyone_still_on_it(
    sessions: db.SessionFactory,
) -> None:
    workers = FakeWorkers()
    ctx = notifier(sessions, workers)
    incident = uuid.uuid4()
    declined, unit, late = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = offered(incident, declined)
    await handle(ctx, first)
    await handle(
        ctx, OfferDeclined(incident_id=incident, offer_id=first.offer_id, responder_id=declined)
    )
    accepted = offered(incident, unit)
    await handle(ctx, accepted)
    await handle(
        ctx,
        OfferAccepted(
            incident_id=incident,
            offer_id=accepted.offer_id,
            responder_id=unit,
            kind="volunteer",
            eta_s=60,
        ),
    )
    await handle(ctx, offered(incident, late))
    workers.submitted.clear()

    await handle(ctx, IncidentResolved(incident_id=incident, resolved_at=datetime.now(UTC)))

    closed = {d.recipient: json.loads(d.message) for d in workers.submitted}
    assert set(closed) == {str(unit), str(late)}
    assert {m["type"] for m in closed.values()} == {"incident_closed"}


async def test_reporters_hear_through_their_webhook_without_the_responders_identity(
    sessions: db.SessionFactory,
) -> None:
    workers = FakeWorkers()
    ctx = notifier(sessions, workers, webhooks_enabled=True)
    incident, report, responder = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.transaction(sessions) as session:
        session.add(
            Webhook(
                url="https://app.example.test/hook",
                audience="reporter",
                report_id=report,
                created_by="reporter",
                created_at=datetime.now(UTC),
            )
        )
    await handle(
        ctx,
        IncidentOpened(
            incident_id=incident,
            report_id=report,
            category="dispute",
            priority=2,
            location=GeoPoint(lat=22.5, lon=114.0),
            received_at=datetime.now(UTC),
            targets=(StageTarget(stage="T1", label="respond", target_s=60),),
        ),
    )
    await handle(
        ctx,
        UnitStatusChanged(
            incident_id=incident, responder_id=responder, kind="patrol", status="on_scene"
        ),
    )

    [delivery] = workers.submitted
    assert (delivery.channel, delivery.audience) == ("webhook", "reporter")
    message = json.loads(delivery.message)
    assert (message["status"], message["kind"]) == ("on_scene", "patrol")
    assert str(responder) not in delivery.message


async def test_dispatchers_hear_on_their_stream_and_the_configured_webhook(
    sessions: db.SessionFactory,
) -> None:
    workers = FakeWorkers()
    ctx = notifier(
        sessions, workers, webhooks_enabled=True, dispatcher_webhook_url="https://desk.test/h"
    )
    await handle(
        ctx,
        NoResponderAvailable(
            incident_id=uuid.uuid4(), category="violence", radius_m=3000, kinds=("patrol",)
        ),
    )
    assert sorted((d.channel, d.recipient, d.target) for d in workers.submitted) == [
        ("stream", "dispatchers", None),
        ("webhook", "configured", "https://desk.test/h"),
    ]
    assert json.loads(workers.submitted[0].message)["type"] == "no_responder_available"
