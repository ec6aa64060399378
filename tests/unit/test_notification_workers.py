"""The delivery workers with fake channels and a fake publisher: retries, the cap,
dead letters, and one owner per delivery."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notification.channels import DeliveryError
from services.notification.metrics import NotificationMetrics
from services.notification.models import Delivery, NotificationTable
from services.notification.service import list_deliveries
from services.notification.workers import DeliveryWorkers, RetryPolicy
from shared import db
from shared.clock import SystemClock
from shared.events import Envelope
from shared.kafka import BrokerUnavailable
from tests.harness import eventually


@dataclass
class FakeChannel:
    """Fails its first ``failures`` sends (permanently if told), then succeeds."""

    name: str = "webhook"
    failures: int = 0
    permanent: bool = False
    sent: list[uuid.UUID] = field(default_factory=list)
    tries: int = 0
    fail_on: frozenset[int] = frozenset()  # and these tries, counted from 1

    async def send(self, delivery: Delivery) -> None:
        self.tries += 1
        await asyncio.sleep(0)
        if self.tries <= self.failures or self.tries in self.fail_on:
            raise DeliveryError("receiver answered 500", permanent=self.permanent)
        self.sent.append(delivery.id)


@dataclass
class FakePublisher:
    """Records what is published; can pretend the broker is away."""

    down: bool = False
    published: list[tuple[Envelope, str, str]] = field(default_factory=list)

    async def publish(self, envelope: Envelope, *, topic: str, key: str) -> None:
        if self.down:
            raise BrokerUnavailable("broker away")
        self.published.append((envelope, topic, key))

    async def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        for envelope, topic, key in items:
            await self.publish(envelope, topic=topic, key=key)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/notification.db")
    await db.create_schema(engine, NotificationTable.metadata, schema=None)
    yield engine
    await engine.dispose()


def workers(
    engine: AsyncEngine, channel: FakeChannel, publisher: FakePublisher, registry: CollectorRegistry
) -> DeliveryWorkers:
    return DeliveryWorkers(
        engine=engine,
        sessions=db.session_factory(engine),
        channels={channel.name: channel},
        publisher=publisher,
        metrics=NotificationMetrics(registry),
        clock=SystemClock(),
        policy=RetryPolicy(max_attempts=3, initial_s=0.001, max_s=0.01, jitter_s=0.001),
    )


async def pending(engine: AsyncEngine) -> Delivery:
    delivery = Delivery(
        event_id=str(uuid.uuid4()),
        event_type="TargetBreached",
        channel="webhook",
        audience="dispatcher",
        recipient="configured",
        target="https://desk.test/h",
        incident_id=uuid.uuid4(),
        message=json.dumps({"type": "target_breached"}),
        occurred_at=datetime.now(UTC),
        created_at=datetime.now(UTC),
    )
    async with db.transaction(db.session_factory(engine)) as session:
        session.add(delivery)
    return delivery


async def logged(engine: AsyncEngine, delivery: Delivery) -> tuple[Delivery, list[str]]:
    [(row, attempts)] = await list_deliveries(
        sessions=db.session_factory(engine),
        incident_id=delivery.incident_id,
        responder_id=None,
        limit=10,
    )
    return row, [a.outcome for a in attempts]


async def test_a_failing_delivery_is_retried_until_it_is_sent(engine: AsyncEngine) -> None:
    registry = CollectorRegistry()
    channel, publisher = FakeChannel(failures=2), FakePublisher()
    delivery = await pending(engine)
    await workers(engine, channel, publisher, registry).deliver(delivery.id)

    row, outcomes = await logged(engine, delivery)
    assert (row.status, outcomes) == ("sent", ["retry", "retry", "sent"])
    assert channel.sent == [delivery.id]
    assert publisher.published == []
    assert (
        registry.get_sample_value("notification_delivery_retries_total", {"channel": "webhook"})
        == 2
    )
    assert (
        registry.get_sample_value(
            "notification_deliveries_total", {"channel": "webhook", "outcome": "sent"}
        )
        == 1
    )


async def test_retries_stop_at_the_cap_and_the_delivery_is_dead_lettered(
    engine: AsyncEngine,
) -> None:
    channel, publisher = FakeChannel(failures=99), FakePublisher()
    delivery = await pending(engine)
    await workers(engine, channel, publisher, CollectorRegistry()).deliver(delivery.id)

    row, outcomes = await logged(engine, delivery)
    assert (row.status, outcomes) == ("failed", ["retry", "retry", "failed"])
    assert row.dead_lettered_at is not None
    [(dead, topic, key)] = publisher.published
    assert topic == "incidents.dlq"
    assert key == str(delivery.incident_id)
    assert dead.payload["delivery"]["delivery_id"] == str(delivery.id)
    assert dead.payload["delivery"]["attempts"] == 3


async def test_a_permanent_failure_is_not_retried(engine: AsyncEngine) -> None:
    channel, publisher = FakeChannel(failures=1, permanent=True), FakePublisher()
    delivery = await pending(engine)
    await workers(engine, channel, publisher, CollectorRegistry()).deliver(delivery.id)

    row, outcomes = await logged(engine, delivery)
    assert (row.status, outcomes) == ("failed", ["failed"])
    assert len(publisher.published) == 1


async def test_a_dead_letter_waits_for_the_broker(engine: AsyncEngine) -> None:
    channel, publisher = FakeChannel(failures=99), FakePublisher(down=True)
    pool = workers(engine, channel, publisher, CollectorRegistry())
    delivery = await pending(engine)
    await pool.deliver(delivery.id)
    assert (await logged(engine, delivery))[0].dead_lettered_at is None

    publisher.down = False
    await pool.resume_once()
    assert [e.payload["delivery"]["delivery_id"] for e, _, _ in publisher.published] == [
        str(delivery.id)
    ]
    assert (await logged(engine, delivery))[0].dead_lettered_at is not None


async def test_two_workers_never_send_the_same_delivery(engine: AsyncEngine) -> None:
    channel, publisher = FakeChannel(), FakePublisher()
    delivery = await pending(engine)
    one = workers(engine, channel, publisher, CollectorRegistry())
    other = workers(engine, channel, publisher, CollectorRegistry())
    await asyncio.gather(one.deliver(delivery.id), other.deliver(delivery.id))
    await one.deliver(delivery.id)
    assert channel.sent == [delivery.id]


async def leased_offers(engine: AsyncEngine, count: int) -> list[Delivery]:
    """Offers to one responder's stream, written leased as the consume loop writes them."""
    now, incident_id, responder = datetime.now(UTC), uuid.uuid4(), str(uuid.uuid4())
    offers = [
        Delivery(
            event_id=str(uuid.uuid4()),
            event_type="ResponderOffered",
            channel="stream",
            audience="responder",
            recipient=responder,
            incident_id=incident_id,
            message=json.dumps({"type": "offer", "n": n}),
            occurred_at=now,
            created_at=now,
            lease_until=now + timedelta(seconds=10),
        )
        for n in range(count)
    ]
    async with db.transaction(db.session_factory(engine)) as session:
        session.add_all(offers)
    return offers


@pytest.mark.parametrize("fail_on", [frozenset(), frozenset({2})])
async def test_live_deliveries_queued_together_go_out_in_order_each_logged_once(
    engine: AsyncEngine, fail_on: frozenset[int]
) -> None:
    channel = FakeChannel(name="stream", fail_on=fail_on)
    pool = workers(engine, channel, FakePublisher(), CollectorRegistry())
    offers = await leased_offers(engine, 3)
    pool.submit(offers, leased=True)  # queued before the workers start: one group
    await pool.start()
    try:
        await eventually(lambda: len(channel.sent) == 3, timeout=5)
    finally:
        await pool.stop()
    assert channel.sent == [offer.id for offer in offers]
    [*rows] = await list_deliveries(
        sessions=db.session_factory(engine),
        incident_id=offers[0].incident_id,
        responder_id=None,
        limit=10,
    )
    assert (
        sorted((row.status, row.attempts, [a.outcome for a in log]) for row, log in rows)
        == [("sent", 1, ["sent"])] * 3
    )
