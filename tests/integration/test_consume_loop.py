"""The one consume loop, on the real broker and Redis: at least once, idempotent on
event_id, dead letters for what can never be handled, and resume after a restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from shared.events import (
    REPORTS,
    Envelope,
    Event,
    GeoPoint,
    ReportCancelled,
    ReportReceived,
    dead_letter_topic,
)
from shared.kafka import (
    BatchHandler,
    ConsumerMetrics,
    EventConsumer,
    Handler,
    KafkaPublisher,
)
from shared.redis import RedisDedupeStore, create_redis
from tests.harness import Infra, TopicReader, eventually


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
    batch_handlers: dict[type[Event], BatchHandler] | None = None,
) -> AsyncIterator[EventConsumer]:
    redis = create_redis(infra.redis_url)
    consumer = EventConsumer(
        bootstrap_servers=infra.kafka,
        group_id="test-group",
        topics=[REPORTS],
        handlers=handlers,
        batch_handlers=batch_handlers or {},
        dedupe=RedisDedupeStore(redis, namespace="test"),
        publisher=publisher,
        metrics=ConsumerMetrics("test", CollectorRegistry()),
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
        await redis.aclose()


async def test_a_redelivered_event_is_handled_once(infra: Infra) -> None:
    handled: list[uuid.UUID] = []

    async def on_report(event: Event, envelope: Envelope) -> None:
        handled.append(envelope.event_id)

    async with (
        _publisher(infra) as publisher,
        _consumer(infra, publisher, {ReportReceived: on_report}),
    ):
        envelope = Envelope.wrap(_report())
        for _ in range(3):  # a producer retry, then a replay
            await publisher.publish(envelope, topic=REPORTS, key=envelope.correlation_id)
        other = Envelope.wrap(_report())
        await publisher.publish(other, topic=REPORTS, key=other.correlation_id)
        await eventually(lambda: other.event_id in handled, timeout=15)
    assert sorted(handled) == sorted([envelope.event_id, other.event_id])


async def test_a_handler_that_always_fails_dead_letters_and_the_stream_moves_on(
    infra: Infra,
) -> None:
    handled: list[str] = []

    async def poisoned(event: Event, envelope: Envelope) -> None:
        raise RuntimeError("cannot handle this one")

    async def on_cancel(event: Event, envelope: Envelope) -> None:
        handled.append(envelope.type)

    async with (
        _publisher(infra) as publisher,
        _consumer(infra, publisher, {ReportReceived: poisoned, ReportCancelled: on_cancel}),
    ):
        bad = _report()
        await publisher.publish(Envelope.wrap(bad), topic=REPORTS, key=bad.key)
        cancel = ReportCancelled(report_id=bad.report_id, cancelled_at=datetime.now(UTC))
        await publisher.publish(Envelope.wrap(cancel), topic=REPORTS, key=cancel.key)
        await publisher.publish(
            Envelope.wrap(bad).model_copy(update={"payload": {"junk": 1}}),
            topic=REPORTS,
            key=bad.key,
        )
        await eventually(lambda: handled == ["ReportCancelled"], timeout=15)
        dead = await TopicReader(infra.kafka, dead_letter_topic(REPORTS)).wait_for(
            lambda e: e.type == "DeadLetter", count=2, timeout=15
        )
    reasons = sorted(str(d.payload["reason"]) for d in dead)
    assert "cannot handle this one" in reasons[0] or "cannot handle this one" in reasons[1]
    assert any("unparseable" in r for r in reasons)
    assert all(d.correlation_id == str(bad.report_id) for d in dead)


async def test_events_sharing_a_batch_handler_come_as_one_run_and_a_bad_one_is_set_apart(
    infra: Infra,
) -> None:
    good, poison = _report(), _report()
    cancel = ReportCancelled(report_id=good.report_id, cancelled_at=datetime.now(UTC))
    sent = [Envelope.wrap(good), Envelope.wrap(poison), Envelope.wrap(cancel)]
    ours = {envelope.event_id for envelope in sent}
    runs: list[list[str]] = []
    handled: list[uuid.UUID] = []

    async def on_run(batch: Sequence[tuple[Event, Envelope]]) -> None:
        # The broker is shared with other tests: their events may come along.
        runs.append([envelope.type for _, envelope in batch if envelope.event_id in ours])
        if any(getattr(event, "report_id", None) == poison.report_id for event, _ in batch):
            raise RuntimeError("cannot handle this one")  # as a transaction would, all or none
        handled.extend(envelope.event_id for _, envelope in batch if envelope.event_id in ours)

    async with _publisher(infra) as publisher:
        for envelope in sent:  # one key, so one partition, in this order
            await publisher.publish(envelope, topic=REPORTS, key="one-partition")
        async with _consumer(
            infra, publisher, {}, dict.fromkeys((ReportReceived, ReportCancelled), on_run)
        ):
            await eventually(lambda: len(handled) == 2, timeout=15)
            [dead] = await TopicReader(infra.kafka, dead_letter_topic(REPORTS)).wait_for(
                lambda e: e.type == "DeadLetter" and str(poison.report_id) in str(e.payload),
                count=1,
                timeout=15,
            )
    assert ["ReportReceived", "ReportReceived", "ReportCancelled"] in runs
    assert handled == [sent[0].event_id, sent[2].event_id]
    assert "cannot handle this one" in str(dead.payload["reason"])


async def test_a_restarted_consumer_resumes_after_its_last_commit(infra: Infra) -> None:
    seen: list[str] = []

    async def on_report(event: Event, envelope: Envelope) -> None:
        assert isinstance(event, ReportReceived)
        seen.append(str(event.report_id))

    async with _publisher(infra) as publisher:
        first = _report()
        async with _consumer(infra, publisher, {ReportReceived: on_report}):
            await publisher.publish(Envelope.wrap(first), topic=REPORTS, key=first.key)
            await eventually(lambda: seen == [str(first.report_id)], timeout=15)
        second = _report()
        # Published while nobody consumes: the restarted consumer must pick it up.
        await publisher.publish(Envelope.wrap(second), topic=REPORTS, key=second.key)
        async with _consumer(infra, publisher, {ReportReceived: on_report}):
            await eventually(lambda: len(seen) == 2, timeout=15)
    assert seen == [str(first.report_id), str(second.report_id)]
