"""A broker restart loses nothing: the embedded broker comes back empty (topics and
committed offsets gone), intake notices and publishes its recent events again, and a
consumer handles each report exactly once, including one it had not read before the
restart."""

from __future__ import annotations

import collections
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import select

from services.intake.app import create_app
from services.intake.models import OUTBOX
from services.intake.settings import IntakeSettings
from shared.broker_epoch import RewindAfterLoss
from shared.events import REPORTS, Envelope, Event, ReportReceived
from shared.kafka import ConsumerMetrics, EventConsumer, KafkaPublisher, ensure_topics
from shared.redis import RedisDedupeStore, create_redis
from tests.harness import Infra, RunningApp, TopicReader, eventually, serve
from tools.embedded import Component

THEFT = {"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}


class Reader:
    """A consumer group that notes every report it handles."""

    def __init__(self, infra: Infra, redis: Redis, group: str) -> None:
        self.infra = infra
        self.redis = redis
        self.group = group
        self.handled: collections.Counter[str] = collections.Counter()
        self.registry = CollectorRegistry()
        self.metrics = ConsumerMetrics(group, self.registry)

    async def on_report(self, event: Event, _envelope: Envelope) -> None:
        """Note the report."""
        if isinstance(event, ReportReceived):
            self.handled[str(event.report_id)] += 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[EventConsumer]:
        """Consume until the block ends."""
        publisher = KafkaPublisher(self.infra.kafka, client_id=self.group)
        await publisher.start()
        consumer = EventConsumer(
            bootstrap_servers=self.infra.kafka,
            group_id=self.group,
            topics=[REPORTS],
            handlers={ReportReceived: self.on_report},
            dedupe=RedisDedupeStore(self.redis, namespace=self.group),
            publisher=publisher,
            metrics=self.metrics,
            session_timeout_ms=3_000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()
            await publisher.stop()


async def _post(intake: RunningApp) -> str:
    async with intake.client() as client:
        answer = await client.post("/v1/reports", json=THEFT)
    assert answer.status_code == 202, answer.text
    report_id: str = answer.json()["report_id"]
    return report_id


async def _all_published(intake: RunningApp) -> bool:
    pending = select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
    async with intake.app.state.runtime.sessions() as session:
        return int((await session.exec(pending)).one()) == 0


async def _metric(intake: RunningApp, name: str) -> float:
    async with intake.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _restart(broker: Component) -> None:
    os.kill(broker.process.pid, signal.SIGKILL)
    broker.process.wait(10)
    broker.respawn()


async def test_a_report_on_the_broker_when_it_restarts_reaches_its_consumer_once(
    infra: Infra, broker: Component
) -> None:
    redis = create_redis(infra.redis_url)
    live = Reader(infra, redis, "live")  # consumes throughout, through the restart
    late = Reader(infra, redis, "late")  # away while the broker restarts
    settings: Any = infra.settings(IntakeSettings, "intake", broker_epoch_check_s=0.5)
    try:
        async with serve(create_app(settings)) as intake, live.running():
            async with late.running():
                first = await _post(intake)
                await eventually(lambda: live.handled[first] and late.handled[first], timeout=30)

            # On the broker, and not yet read by ``late``, when the broker restarts empty.
            unread = await _post(intake)
            await eventually(lambda: _all_published(intake), timeout=30)
            await eventually(lambda: live.handled[unread], timeout=30)
            _restart(broker)
            await ensure_topics(broker.url)

            await eventually(lambda: _republished_at_least(intake, 2), timeout=60, interval=0.2)
            on_new_broker = await TopicReader(broker.url, REPORTS).read_all()
            assert {str(e.payload["report_id"]) for e in on_new_broker} >= {first, unread}

            after = await _post(intake)
            async with late.running():
                await eventually(lambda: late.handled[unread] and late.handled[after], timeout=60)
                await eventually(lambda: live.handled[after], timeout=60)
                # Time for any second delivery to show.
                await eventually(lambda: _settled(late, live), timeout=10, interval=1.0)

        assert late.handled == {first: 1, unread: 1, after: 1}
        assert live.handled == {first: 1, unread: 1, after: 1}
    finally:
        await redis.aclose()


async def _republished_at_least(intake: RunningApp, count: int) -> bool:
    return await _metric(intake, "intake_outbox_republished_total") >= count


async def _settled(*readers: Reader) -> bool:
    """True once every reader's lag gauge reads zero."""
    for reader in readers:
        lag = reader.registry.get_sample_value(
            f"{reader.group}_consumer_lag_messages", {"topic": REPORTS}
        )
        if lag is None or lag > 0:
            return False
    return True


async def _read_group(
    infra: Infra, topic: str, group: str, *, rewinding: bool, expected: int
) -> list[bytes]:
    """What a member of ``group`` reads from ``topic`` once assigned (its first fetches)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=infra.kafka,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    consumer.subscribe([topic], listener=RewindAfterLoss(consumer, rewinding=lambda: rewinding))
    await consumer.start()
    seen: list[bytes] = []
    try:
        for _ in range(30):
            batches = await consumer.getmany(timeout_ms=200)
            seen += [r.value or b"" for records in batches.values() for r in records]
            if len(seen) >= expected:
                break
    finally:
        await consumer.stop()
    return seen


async def test_an_old_offset_committed_to_the_new_broker_skips_nothing_while_rewinding(
    infra: Infra,
) -> None:
    # A batch read from the old broker and committed to the new one leaves an offset far
    # past the new broker's log: the group's next member would start there.
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    await ensure_topics(infra.kafka, [topic], partitions=1, with_dead_letters=False)
    partition = TopicPartition(topic, 0)
    stale = AIOKafkaConsumer(bootstrap_servers=infra.kafka, group_id="g", enable_auto_commit=False)
    await stale.start()
    try:
        stale.assign([partition])
        await stale.commit({partition: 500})
    finally:
        await stale.stop()
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, f"new-{n}".encode(), partition=0)
    finally:
        await producer.stop()

    trusting = await _read_group(infra, topic, "g", rewinding=False, expected=3)
    rewound = await _read_group(infra, topic, "g", rewinding=True, expected=3)

    assert trusting == []  # what the loop did before it rewound on assignment
    assert rewound == [b"new-0", b"new-1", b"new-2"]
