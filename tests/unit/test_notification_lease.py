"""A live delivery leased by an instance that dies is taken over by another instance
before the offer it carries runs out; a remote one keeps its long lease."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notification.metrics import NotificationMetrics
from services.notification.models import Delivery, NotificationTable
from services.notification.settings import NotificationSettings
from services.notification.workers import DeliveryWorkers, RetryPolicy
from shared import db
from shared.clock import FakeClock
from tests.unit.test_notification_workers import FakePublisher

OFFER_TIMEOUT_S = 30.0
FIELDS = NotificationSettings.model_fields
LIVE_LEASE_S: float = FIELDS["live_lease_s"].default
LEASE_S: float = FIELDS["lease_s"].default


@dataclass
class HangingChannel:
    """Never finishes a send: the instance holding the lease dies mid-delivery."""

    name: str
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, delivery: Delivery) -> None:
        self.started.set()
        await asyncio.Event().wait()


@dataclass
class RecordingChannel:
    name: str
    sent: list[uuid.UUID] = field(default_factory=list)

    async def send(self, delivery: Delivery) -> None:
        self.sent.append(delivery.id)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/notification.db")
    await db.create_schema(engine, NotificationTable.metadata, schema=None)
    yield engine
    await engine.dispose()


def instance(
    engine: AsyncEngine, channel: HangingChannel | RecordingChannel, clock: FakeClock
) -> DeliveryWorkers:
    return DeliveryWorkers(
        engine=engine,
        sessions=db.session_factory(engine),
        channels={channel.name: channel},
        publisher=FakePublisher(),
        metrics=NotificationMetrics(CollectorRegistry()),
        clock=clock,
        policy=RetryPolicy(max_attempts=3, initial_s=0.001, max_s=0.01, jitter_s=0.001),
        lease_s=LEASE_S,
        live_lease_s=LIVE_LEASE_S,
    )


async def pending(engine: AsyncEngine, channel: str, now: datetime) -> Delivery:
    delivery = Delivery(
        event_id=str(uuid.uuid4()),
        event_type="ResponderOffered",
        channel=channel,
        audience="responder",
        recipient=str(uuid.uuid4()),
        target="stream",
        incident_id=uuid.uuid4(),
        message=json.dumps({"type": "offer"}),
        occurred_at=now,
        created_at=now,
    )
    async with db.transaction(db.session_factory(engine)) as session:
        session.add(delivery)
    return delivery


async def die_mid_delivery(
    engine: AsyncEngine, channel_name: str, clock: FakeClock, delivery: Delivery
) -> None:
    """One instance leases the delivery, starts sending and is killed."""
    channel = HangingChannel(channel_name)
    doomed = instance(engine, channel, clock)
    task = asyncio.create_task(doomed.deliver(delivery.id))
    await asyncio.wait_for(channel.started.wait(), 10)
    task.cancel()  # no stop(): a dead process gives nothing back
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_default_live_lease_is_well_inside_the_offer_timeout() -> None:
    assert LIVE_LEASE_S < OFFER_TIMEOUT_S / 2


async def test_a_live_delivery_of_a_dead_instance_is_sent_by_another_before_the_offer_lapses(
    engine: AsyncEngine,
) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    delivery = await pending(engine, "stream", clock.now())
    await die_mid_delivery(engine, "stream", clock, delivery)

    survivor_channel = RecordingChannel("stream")
    survivor = instance(engine, survivor_channel, clock)
    clock.advance(LIVE_LEASE_S + 1)
    await survivor.resume_once()
    await survivor.deliver(delivery.id)

    assert survivor_channel.sent == [delivery.id]


async def test_a_leased_live_delivery_is_not_taken_while_its_owner_may_still_send(
    engine: AsyncEngine,
) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    delivery = await pending(engine, "stream", clock.now())
    await die_mid_delivery(engine, "stream", clock, delivery)

    survivor_channel = RecordingChannel("stream")
    clock.advance(1)
    await instance(engine, survivor_channel, clock).deliver(delivery.id)

    assert survivor_channel.sent == []


async def test_a_remote_delivery_keeps_its_long_lease(engine: AsyncEngine) -> None:
    clock = FakeClock(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    delivery = await pending(engine, "webhook", clock.now())
    await die_mid_delivery(engine, "webhook", clock, delivery)

    survivor_channel = RecordingChannel("webhook")
    clock.advance(LIVE_LEASE_S + 1)
    await instance(engine, survivor_channel, clock).deliver(delivery.id)

    assert survivor_channel.sent == []
