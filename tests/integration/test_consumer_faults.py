"""The consume loop on a bad day, on the real broker and Redis: a failure that clears is
retried until the event is handled (never dead-lettered), one that will recur is
dead-lettered once and can be replayed with ``tools.dlq``, and an unexpected failure
of the loop itself neither kills it nor hides: ``/readyz`` is red until it is back."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from shared.events import REPORTS, Envelope, Event, GeoPoint, ReportReceived, dead_letter_topic
from shared.faults import PermanentError
from shared.http import ops_router
from shared.kafka import (
    ConsumerMetrics,
    DedupeStore,
    EventConsumer,
    Handler,
    KafkaPublisher,
    consumers_healthy,
)
from shared.redis import RedisDedupeStore, create_redis
from tests.harness import Infra, TopicReader, eventually, serve
from tools import dlq
from tools.devstack import ROOT


def _report() -> ReportReceived:
    return ReportReceived(
        report_id=uuid.uuid4(),
        category="theft",
        location=GeoPoint(lat=22.5, lon=114.1),
        received_at=datetime.now(UTC),
    )


@asynccontextmanager
async def _publisher(infra: Infra) -> AsyncIterator[KafkaPublisher]:
    publisher = KafkaPublisher(infra.kafka, client_id="test")
    await publisher.start()
    await publisher.wait_connected(10)
    try:
        yield publisher
    finally:
        await publisher.stop()


@asynccontextmanager
async def _consumer(
    infra: Infra,
    publisher: KafkaPublisher,
    handlers: dict[type[Event], Handler],
    *,
    metrics: ConsumerMetrics,
    dedupe: DedupeStore | None = None,
) -> AsyncIterator[EventConsumer]:
    redis = create_redis(infra.redis_url)
    consumer = EventConsumer(
        bootstrap_servers=infra.kafka,
        group_id="faults",
        topics=[REPORTS],
        handlers=handlers,
        dedupe=dedupe or RedisDedupeStore(redis, namespace="faults"),
        publisher=publisher,
        metrics=metrics,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        restart_max_s=1.0,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
        await redis.aclose()


async def _dlq(infra: Infra, run_dir: Path, *args: str) -> str:
    """Run ``python -m tools.dlq`` as a user would; its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.dlq",
        "--broker",
        infra.kafka,
        "--run-dir",
        str(run_dir),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_database_outage_is_retried_until_the_event_is_handled_not_dead_lettered(
    infra: Infra,
) -> None:
    attempts: list[float] = []
    handled: list[uuid.UUID] = []

    async def on_report(event: Event, envelope: Envelope) -> None:
        attempts.append(time.monotonic())
        if attempts[-1] - attempts[0] < 1.5:  # the database is away for 1.5 s
            raise OperationalError("INSERT ...", {}, ConnectionRefusedError("failover"))
        handled.append(envelope.event_id)

    registry = CollectorRegistry()
    metrics = ConsumerMetrics("test", registry)
    async with (
        _publisher(infra) as publisher,
        _consumer(infra, publisher, {ReportReceived: on_report}, metrics=metrics),
    ):
        envelope = Envelope.wrap(_report())
        await publisher.publish(envelope, topic=REPORTS, key=envelope.correlation_id)
        await eventually(lambda: handled == [envelope.event_id], timeout=20)
        dead = await TopicReader(infra.kafka, dead_letter_topic(REPORTS)).read_all()
    assert dead == []
    assert len(attempts) > 3, "a transient failure is tried more often than a poison event"
    assert (
        _metric(
            registry, "test_events_consumed_total", topic=REPORTS, type="any", outcome="retried"
        )
        > 0
    )
    assert _metric(registry, "test_consumer_restarts_total", topic=REPORTS) == 0


async def test_a_permanent_failure_is_dead_lettered_once_and_tools_dlq_replays_it(
    infra: Infra, tmp_path: Path
) -> None:
    calls: list[uuid.UUID] = []
    accept = False

    async def on_report(event: Event, envelope: Envelope) -> None:
        calls.append(envelope.event_id)
        if not accept:
            raise PermanentError("no such category in this version")

    registry = CollectorRegistry()
    async with (
        _publisher(infra) as publisher,
        _consumer(
            infra, publisher, {ReportReceived: on_report}, metrics=ConsumerMetrics("t", registry)
        ),
    ):
        report = _report()
        envelope = Envelope.wrap(report)
        await publisher.publish(envelope, topic=REPORTS, key=report.key)
        reader = TopicReader(infra.kafka, dead_letter_topic(REPORTS))
        await reader.wait_for(lambda e: e.type == "DeadLetter", count=1, timeout=15)
        assert len(await reader.read_all(settle_s=1.0)) == 1
        assert calls == [envelope.event_id], "a permanent failure is not retried"

        letters = await dlq.read_dead_letters(infra.kafka)
        assert len(letters) == 1
        letter = letters[0]
        assert letter.source_topic == REPORTS
        assert letter.original_type == "ReportReceived"
        assert "no such category" in letter.reason
        listed = await _dlq(infra, tmp_path, "list")
        assert letter.id[:8] in listed, listed
        assert "ReportReceived" in listed, listed
        shown = await _dlq(infra, tmp_path, "show", letter.id[:8])
        assert str(report.report_id) in shown, shown
        assert "no such category" in shown, shown

        accept = True
        replayed, skipped = await dlq.replay(infra.kafka, letters, run_dir=tmp_path)
        assert (len(replayed), skipped) == (1, [])
        await eventually(lambda: calls.count(envelope.event_id) == 2, timeout=15)
        # A second replay of the same dead letter is skipped.
        replayed, skipped = await dlq.replay(infra.kafka, letters, run_dir=tmp_path)
        assert (replayed, len(skipped)) == ([], 1)
        records = await TopicReader(infra.kafka, REPORTS).read_all()
    assert [r.event_id for r in records] == [envelope.event_id, envelope.event_id]


class _BrokenForAWhile:
    """A dedupe store with a bug that fires for its first few calls."""

    def __init__(self, inner: DedupeStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        if self.failures > 0:
            self.failures -= 1
            raise KeyError("a bug, not an outage")
        return await self.inner.seen(event_ids)

    async def mark(self, event_ids: Sequence[str]) -> None:
        await self.inner.mark(event_ids)


async def test_an_unexpected_failure_restarts_the_consumer_and_readyz_is_red_meanwhile(
    infra: Infra,
) -> None:
    handled: list[uuid.UUID] = []

    async def on_report(event: Event, envelope: Envelope) -> None:
        handled.append(envelope.event_id)

    registry = CollectorRegistry()
    redis = create_redis(infra.redis_url)
    broken = _BrokenForAWhile(RedisDedupeStore(redis, namespace="broken"), failures=3)
    app = FastAPI()
    app.include_router(ops_router(registry))
    async with (
        _publisher(infra) as publisher,
        _consumer(
            infra,
            publisher,
            {ReportReceived: on_report},
            metrics=ConsumerMetrics("test", registry),
            dedupe=broken,
        ) as consumer,
        serve(app, wait_ready=False) as running,
        httpx.AsyncClient(base_url=running.base_url) as client,
    ):
        app.state.readiness = {"consumers": consumers_healthy([consumer])}
        await consumer.wait_assigned(20)
        assert (await client.get("/readyz")).status_code == 200
        envelope = Envelope.wrap(_report())
        await publisher.publish(envelope, topic=REPORTS, key=envelope.correlation_id)
        red: list[int] = []

        async def went_red() -> bool:
            answer = await client.get("/readyz")
            if answer.status_code == 503:
                red.append(answer.status_code)
                assert answer.json()["checks"] == {"consumers": False}
            return bool(red)

        await eventually(went_red, timeout=15)
        await eventually(lambda: handled == [envelope.event_id], timeout=30)
        ready = await client.get("/readyz")
        assert ready.status_code == 200
    await redis.aclose()
    assert _metric(registry, "test_consumer_restarts_total", topic=REPORTS) >= 3
