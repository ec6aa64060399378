"""The one consume loop every service uses.

It commits offsets by hand, after the handler has run, so delivery is at least once. It
skips events whose ``event_id`` it has already handled, backs off while the broker is
away, dead-letters what can never be handled, and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared.broker_epoch import BrokerEpochWatch, RewindAfterLoss, read_from_start
from shared.consumer_metrics import ConsumerMetrics
from shared.events import (
    DeadLetter,
    Envelope,
    Event,
    UnknownEventType,
    dead_letter_topic,
)
from shared.faults import Fault, classify
from shared.logging import correlation
from shared.producer import BrokerUnavailable, Publisher
from shared.tasks import finish, wait_until_set

log = logging.getLogger(__name__)


class DedupeStore(Protocol):
    """Remembers which event ids a consumer group has already handled."""

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Return the subset of ``event_ids`` already handled."""
        ...

    async def mark(self, event_ids: Sequence[str]) -> None:
        """Record ``event_ids`` as handled."""
        ...


class MemoryDedupeStore:
    """An in-process dedupe store, for tests."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Return the ids already marked."""
        return self.ids.intersection(event_ids)

    async def mark(self, event_ids: Sequence[str]) -> None:
        """Mark ids as handled."""
        self.ids.update(event_ids)


Handler = Callable[[Event, Envelope], Awaitable[None]]
BatchHandler = Callable[[Sequence[tuple[Event, Envelope]]], Awaitable[None]]
RawBatchHandler = Callable[[Sequence[bytes]], Awaitable[Sequence[int]]]


@dataclass(frozen=True)
class RawLane:
    """A topic whose records go to ``handle`` as the bytes they are, a partition's fetch at
    a time, with no pydantic envelope and no event-id check: for a high-rate stream whose
    producer built and validated every record (location pings). ``handle`` returns the
    positions of the records it could not decode; those are dead-lettered."""

    event_type: str
    handle: RawBatchHandler


class _PartitionBlocked(Exception):
    """A transient failure at ``offset``: that partition waits and tries again from there."""

    def __init__(self, offset: int, cause: BaseException) -> None:
        super().__init__(f"transient failure at offset {offset}: {cause!r}")
        self.offset = offset
        self.cause = cause


@dataclass
class EventConsumer:
    """Consumes topics with a routing table of handlers.

    ``handlers`` maps event types to plain async functions. ``batch_handlers`` take a
    run of consecutive events at once: events whose types map to the same batch handler
    form one run (location pings; a service that writes a partition's run of incident
    events in one transaction). If a run fails for good, its events are tried again one
    at a time, so only the one that cannot be handled is dead-lettered. Types in
    ``naturally_idempotent`` skip the event-id check, because their handler already
    ignores repeats (for example, an older ping).

    With ``concurrent_partitions`` the records of different partitions in one fetch are
    handled at the same time (each partition still in order, its offset committed after
    its handlers), so a handler that waits on I/O does not hold up the other partitions.
    Only for handlers that are safe to run side by side.

    Failures (see :mod:`shared.faults`): a transient one (database, Redis, a timeout, a
    peer that is down) pauses that partition and tries the same record again after a
    backoff of ``retry_initial_s`` doubling up to ``retry_max_s``, for as long as it
    takes, while the other partitions go on; it is never dead-lettered. A permanent one
    is dead-lettered at once, an unclassified one after ``handler_attempts`` tries. Any
    other failure of the loop itself (a lost broker, a bug) throws the Kafka consumer
    away and starts a new one after a backoff; offsets are only ever committed after a
    record was handled, so nothing is skipped. While that happens :attr:`healthy` is
    false and ``<service>_consumer_restarts_total`` counts it.
    """

    bootstrap_servers: str
    group_id: str
    topics: Sequence[str]
    handlers: Mapping[type[Event], Handler]
    dedupe: DedupeStore
    publisher: Publisher
    metrics: ConsumerMetrics
    batch_handlers: Mapping[type[Event], BatchHandler] = field(default_factory=dict)
    raw_lanes: Mapping[str, RawLane] = field(default_factory=dict)
    naturally_idempotent: frozenset[type[Event]] = frozenset()
    fetch_max_wait_ms: int = 10
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_records: int = 500
    metadata_max_age_ms: int = 5_000
    handler_attempts: int = 3
    auto_offset_reset: str = "earliest"
    concurrent_partitions: bool = False
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    restart_max_s: float = 10.0
    stop_timeout_s: float = 3.0
    # Notices a broker that lost its topics (and with them this group's offsets); the
    # loop then reads its partitions again from the start (the dedupe store skips repeats),
    # and so does every assignment for ``rewind_window_s`` after (see RewindAfterLoss).
    broker_epoch: BrokerEpochWatch | None = None
    rewind_window_s: float = 30.0
    _epoch_known: bool = field(default=False, init=False)
    _rewind_until: float = field(default=0.0, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    _assigned: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _down: bool = field(default=False, init=False)
    _paused: dict[TopicPartition, float] = field(default_factory=dict, init=False)
    _retry_delay_s: dict[TopicPartition, float] = field(default_factory=dict, init=False)

    async def start(self) -> None:
        """Start consuming in the background."""
        self._task = asyncio.create_task(self._run(), name=f"consume-{self.group_id}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group; a handler still
        busy after ``stop_timeout_s`` is cancelled (its records come again)."""
        self._stopping.set()
        await finish(self._task, timeout_s=self.stop_timeout_s)
        if self.broker_epoch is not None:
            await self.broker_epoch.close()

    @property
    def running(self) -> bool:
        """Whether the loop is connected and has partitions assigned."""
        return self._consumer is not None and self._assigned.is_set()

    @property
    def healthy(self) -> bool:
        """False while the loop is recovering from a failure, or if it has ended
        without being asked to stop (a readiness check)."""
        if self._task is None:
            return False
        if self._task.done():
            return self._stopping.is_set()
        return not self._down

    async def wait_assigned(self, timeout: float = 30) -> None:
        """Wait until the group has given this consumer its partitions."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_poll_records=self.max_records,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            # After the embedded broker restarts, its topics are created again; a consumer
            # only sees their partitions (and asks for a new assignment) at its next
            # metadata refresh, by default 5 minutes away. Until then it left some
            # partitions unread (the short chaos run found reports lost that way).
            metadata_max_age_ms=self.metadata_max_age_ms,
        )
        consumer.subscribe(
            list(self.topics), listener=RewindAfterLoss(consumer, rewinding=self._rewinding)
        )
        return consumer

    def _rewinding(self) -> bool:
        return time.monotonic() < self._rewind_until

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            try:
                await consumer.start()
                self._consumer = consumer
                await self._poll(consumer)
            except Exception as exc:  # the loop must outlive any failure
                if not self._down:
                    delay = 0.2  # it had recovered since the last failure
                self._down = True
                for topic in self.topics:
                    self.metrics.restarts.labels(topic).inc()
                if isinstance(exc, KafkaError | OSError):
                    log.warning("consumer %s lost the broker: %r", self.group_id, exc)
                else:
                    log.exception("consumer %s failed; starting a new one", self.group_id)
                log.warning("consumer %s restarts in about %.1fs", self.group_id, delay)
                await self._sleep(delay)
                delay = min(delay * 2, self.restart_max_s)
            finally:
                self._consumer = None
                self._assigned.clear()
                self._paused.clear()
                self._retry_delay_s.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)

    async def _sleep(self, seconds: float) -> None:
        await wait_until_set(self._stopping, seconds * (0.5 + random.random()))

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await self._reread_if_broker_lost(consumer)
            assignment = consumer.assignment()
            for tp, resume_at in list(self._paused.items()):
                if tp not in assignment:
                    # Revoked: whoever gets it starts from the committed (unhandled) offset.
                    del self._paused[tp]
                elif loop.time() >= resume_at:
                    del self._paused[tp]
                    consumer.resume(tp)
            batches: dict[
                TopicPartition, list[ConsumerRecord[bytes, bytes]]
            ] = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if consumer.assignment():
                self._assigned.set()
                self._down = False
            fetched = [
                (tp, records)
                for tp, records in batches.items()
                if records and tp not in self._paused
            ]
            outcomes: list[BaseException | None]
            if self.concurrent_partitions and len(fetched) > 1:
                outcomes = list(
                    await asyncio.gather(
                        *(self._handle_timed(tp, records) for tp, records in fetched),
                        return_exceptions=True,
                    )
                )
            else:
                outcomes = []
                for tp, records in fetched:
                    try:
                        await self._handle_timed(tp, records)
                    except Exception as exc:
                        outcomes.append(exc)
                        if not isinstance(exc, _PartitionBlocked):
                            break
                    else:
                        outcomes.append(None)
            await self._settle(consumer, fetched[: len(outcomes)], outcomes)
            await self._report_lag(consumer)

    async def _reread_if_broker_lost(self, consumer: AIOKafkaConsumer) -> None:
        if self.broker_epoch is None or not await self.broker_epoch.lost_topics():
            self._epoch_known = self._epoch_known or self.broker_epoch is not None
            return
        if not self._epoch_known:
            # The first look of this process: committed offsets (or auto_offset_reset)
            # already decide where it starts.
            self._epoch_known = True
            return
        assignment = consumer.assignment()
        log.warning("consumer %s: the broker lost its topics; reading again", self.group_id)
        self._rewind_until = time.monotonic() + self.rewind_window_s
        read_from_start(consumer, assignment)

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        fetched: Sequence[tuple[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]],
        outcomes: Sequence[BaseException | None],
    ) -> None:
        """Commit what was handled, pause what hit a transient failure, then raise the
        first other failure (its records come again: at least once)."""
        commits: dict[TopicPartition, int] = {}
        failure: BaseException | None = None
        for (tp, records), outcome in zip(fetched, outcomes, strict=True):
            if outcome is None:
                commits[tp] = records[-1].offset + 1
                self._retry_delay_s.pop(tp, None)
            elif isinstance(outcome, _PartitionBlocked):
                if outcome.offset > records[0].offset:
                    commits[tp] = outcome.offset
                self._pause(consumer, tp, outcome)
            elif failure is None:
                failure = outcome
        if commits:
            await consumer.commit(commits)
        if failure is not None:
            raise failure

    def _pause(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, blocked: _PartitionBlocked
    ) -> None:
        delay = self._retry_delay_s.get(tp, self.retry_initial_s)
        self._retry_delay_s[tp] = min(delay * 2, self.retry_max_s)
        consumer.pause(tp)
        consumer.seek(tp, blocked.offset)
        self._paused[tp] = asyncio.get_running_loop().time() + delay
        self.metrics.consumed.labels(tp.topic, "any", "retried").inc()
        log.warning(
            "transient failure on %s[%d]; trying again in %.1fs: %r",
            tp.topic,
            tp.partition,
            delay,
            blocked.cause,
        )

    async def _handle_timed(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        with self.metrics.handle_seconds.labels(tp.topic).time():
            lane = self.raw_lanes.get(tp.topic)
            if lane is not None:
                await self._handle_raw(tp, records, lane)
            else:
                await self._handle_partition(tp, records)

    async def _handle_raw(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]], lane: RawLane
    ) -> None:
        values = [record.value or b"" for record in records]
        try:
            bad: Sequence[int] = await self._attempt(
                lambda: lane.handle(values), offset=records[0].offset
            )
        except _PartitionBlocked:
            raise
        except Exception as exc:
            log.exception("raw handler failed for good; dead-lettering %d records", len(records))
            bad = range(len(records))
            reason = repr(exc)
        else:
            reason = "unparseable"
        for i in bad:
            await self._dead_letter(tp.topic, records[i].key, records[i].value, reason)
        if bad:
            self.metrics.consumed.labels(tp.topic, lane.event_type, "dead_lettered").inc(len(bad))
        if len(bad) < len(records):
            handled = len(records) - len(bad)
            self.metrics.consumed.labels(tp.topic, lane.event_type, "handled").inc(handled)

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag_by_topic: dict[str, int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            lag_by_topic[tp.topic] = lag_by_topic.get(tp.topic, 0) + max(0, highwater - position)
        for topic, lag in lag_by_topic.items():
            self.metrics.lag.labels(topic).set(lag)

    async def _infrastructure(self, call: Callable[[], Awaitable[Any]], *, offset: int) -> Any:
        """Run a dedupe-store call: a transient failure blocks the partition at ``offset``;
        anything else fails the loop (which starts over from the last commit)."""
        try:
            return await call()
        except Exception as exc:
            if classify(exc) is Fault.TRANSIENT:
                raise _PartitionBlocked(offset, exc) from exc
            raise

    async def _already_handled(
        self, parsed: Sequence[tuple[Event, Envelope, int]], *, offset: int
    ) -> set[str]:
        """The event ids among ``parsed`` that this group has handled before."""
        to_check = [
            str(env.event_id) for ev, env, _ in parsed if type(ev) not in self.naturally_idempotent
        ]
        if not to_check:
            return set()
        seen: set[str] = await self._infrastructure(
            lambda: self.dedupe.seen(to_check), offset=offset
        )
        return seen

    async def _handle_partition(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        parsed, unparseable = _parse(records)
        already = await self._already_handled(parsed, offset=records[0].offset)

        # In offset order, so that a partition blocked at one record has done exactly
        # the records before it (dead letters included) and none after.
        by_offset = {offset: (event, envelope) for event, envelope, offset in parsed}
        run: list[tuple[Event, Envelope, int]] = []
        for record in records:
            if record.offset in unparseable:
                await self._flush_run(tp.topic, run)
                run = []
                bad, reason = unparseable[record.offset]
                await self._dead_letter(tp.topic, bad.key, bad.value, reason)
                self.metrics.consumed.labels(tp.topic, "unknown", "dead_lettered").inc()
                continue
            event, envelope = by_offset[record.offset]
            event_id = str(envelope.event_id)
            if event_id in already:
                self.metrics.consumed.labels(tp.topic, envelope.type, "duplicate").inc()
                continue
            if type(event) not in self.naturally_idempotent:
                # A repeat can sit in the same batch as the original.
                already.add(event_id)
            batch_handler = self.batch_handlers.get(type(event))
            if run and self.batch_handlers[type(run[0][0])] is not batch_handler:
                await self._flush_run(tp.topic, run)
                run = []
            if batch_handler is not None:
                run.append((event, envelope, record.offset))
            else:
                await self._handle_one(tp.topic, event, envelope, offset=record.offset)
        await self._flush_run(tp.topic, run)

    async def _flush_run(self, topic: str, run: Sequence[tuple[Event, Envelope, int]]) -> None:
        """Hand a run to its batch handler; if it fails for good, try each event alone."""
        if not run:
            return
        handler = self.batch_handlers[type(run[0][0])]
        now = datetime.now(UTC)
        for _, envelope, _ in run:
            delivered_s = (now - envelope.occurred_at).total_seconds()
            self.metrics.delivery_seconds.labels(topic).observe(max(0.0, delivered_s))
        events = [(event, envelope) for event, envelope, _ in run]
        offset = run[0][2]
        try:
            await self._attempt(lambda: handler(events), offset=offset)
        except _PartitionBlocked:
            raise
        except Exception as exc:
            if len(run) > 1:
                log.warning("a run of %d events failed; handling them one at a time", len(run))
                for one in run:
                    await self._flush_run(topic, [one])
                return
            log.exception("batch handler failed for good on %s; dead-lettering", run[0][1].type)
            await self._dead_letter_envelope(topic, run[0][1], repr(exc))
            return
        await self._mark(
            [env for ev, env in events if type(ev) not in self.naturally_idempotent], offset=offset
        )
        for event_type, count in Counter(env.type for _, env in events).items():
            self.metrics.consumed.labels(topic, event_type, "handled").inc(count)

    async def _handle_one(
        self, topic: str, event: Event, envelope: Envelope, *, offset: int
    ) -> None:
        handler = self.handlers.get(type(event))
        if handler is None:
            # Not every service cares about every event on a topic it reads.
            self.metrics.consumed.labels(topic, envelope.type, "ignored").inc()
            return
        delivered_s = (datetime.now(UTC) - envelope.occurred_at).total_seconds()
        self.metrics.delivery_seconds.labels(topic).observe(max(0.0, delivered_s))
        with correlation(envelope.correlation_id):
            try:
                await self._attempt(lambda: handler(event, envelope), offset=offset)
            except _PartitionBlocked:
                raise
            except Exception as exc:
                log.exception("handler failed for good on %s; dead-lettering", envelope.type)
                await self._dead_letter_envelope(topic, envelope, repr(exc))
                return
        if type(event) not in self.naturally_idempotent:
            await self._mark([envelope], offset=offset)
        self.metrics.consumed.labels(topic, envelope.type, "handled").inc()

    async def _mark(self, envelopes: Sequence[Envelope], *, offset: int) -> None:
        if envelopes:
            ids = [str(e.event_id) for e in envelopes]
            await self._infrastructure(lambda: self.dedupe.mark(ids), offset=offset)

    async def _attempt(self, call: Callable[[], Awaitable[Any]], *, offset: int) -> Any:
        """Run a handler. Transient failures block the partition at ``offset``; permanent
        ones raise at once; unclassified ones raise after ``handler_attempts`` tries."""
        delay = 0.05
        for attempt in range(1, self.handler_attempts + 1):
            try:
                return await call()
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.TRANSIENT:
                    raise _PartitionBlocked(offset, exc) from exc
                if fault is Fault.PERMANENT or attempt == self.handler_attempts:
                    raise
                await self._sleep(delay)
                delay *= 4
        raise RuntimeError("unreachable: the last attempt returns or raises")

    async def _dead_letter_envelope(self, topic: str, envelope: Envelope, reason: str) -> None:
        await self._dead_letter(
            topic, envelope.correlation_id.encode(), envelope.to_bytes(), reason
        )
        self.metrics.consumed.labels(topic, envelope.type, "dead_lettered").inc()

    async def _dead_letter(
        self, topic: str, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        dlq = dead_letter_topic(topic)
        wrapper = DeadLetter(
            group=self.group_id,
            source_topic=topic,
            reason=reason,
            original=(value or b"").decode(errors="replace"),
        ).envelope(
            correlation_id=(key or b"").decode(errors="replace"), occurred_at=datetime.now(UTC)
        )
        # Keep trying: dropping a dead letter would lose the event for good.
        delay = 0.2
        while True:
            try:
                await self.publisher.publish(wrapper, topic=dlq, key=wrapper.correlation_id)
                return
            except BrokerUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _parse(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> tuple[list[tuple[Event, Envelope, int]], dict[int, tuple[ConsumerRecord[bytes, bytes], str]]]:
    """The records' events with their offsets, and the records that do not parse (by offset)."""
    parsed: list[tuple[Event, Envelope, int]] = []
    unparseable: dict[int, tuple[ConsumerRecord[bytes, bytes], str]] = {}
    for record in records:
        try:
            envelope = Envelope.from_bytes(record.value or b"")
            parsed.append((envelope.event(), envelope, record.offset))
        except (ValueError, UnknownEventType) as exc:
            unparseable[record.offset] = (record, f"unparseable: {exc}")
    return parsed, unparseable


def consumers_healthy(consumers: Iterable[EventConsumer]) -> Callable[[], Awaitable[bool]]:
    """A readiness check: red while any of ``consumers`` is down."""

    async def check() -> bool:
        return all(c.healthy for c in consumers)

    return check
