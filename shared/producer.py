"""The Kafka producer: publishing envelopes (one by one, in batches, or already encoded)
and creating the topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from shared.events import (
    TOPICS,
    Envelope,
    Event,
    dead_letter_topic,
)
from shared.faults import TransientError
from shared.tasks import cancel

log = logging.getLogger(__name__)


class BrokerUnavailable(TransientError, RuntimeError):
    """The broker cannot be reached right now."""


class Publisher(Protocol):
    """Puts envelopes on topics."""

    async def publish(self, envelope: Envelope, *, topic: str, key: str) -> None:
        """Publish one envelope and wait for the broker's acknowledgement."""
        ...

    async def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        """Publish ``(envelope, topic, key)`` triples, waiting until every one is acknowledged."""
        ...


@runtime_checkable
class EncodedPublisher(Protocol):
    """Puts messages that are already encoded on a topic: the fast lane for high-rate
    streams (such as location pings) whose envelopes are built without pydantic."""

    async def publish_encoded(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Publish ``(key, value)`` messages on ``topic``, keyed as :meth:`publish` keys
        them (so one key's messages stay in order), waiting until all are acknowledged."""
        ...


async def publish_event(publisher: Publisher, event: Event, **wrap: Any) -> Envelope:
    """Wrap ``event`` in a new envelope and publish it on its own topic, keyed by its key."""
    envelope = Envelope.wrap(event, **wrap)
    await publisher.publish(envelope, topic=event.topic, key=event.key)
    return envelope


class KafkaPublisher:
    """A producer that keeps trying to connect in the background.

    A service that starts while the broker is down stays up (and not ready)
    instead of crashing, and becomes ready once the broker answers.
    """

    def __init__(
        self, bootstrap_servers: str, *, client_id: str, send_timeout_s: float = 15.0
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        # Key -> partition, per topic and partition count: aiokafka's murmur2 is pure
        # Python (about 6 us a key), and a stream of pings repeats the same keys.
        self._partition_cache: dict[tuple[str, int, bytes], int] = {}
        self._partitioner = DefaultPartitioner()
        self._closing: set[asyncio.Task[None]] = set()
        self.send_timeout_s = send_timeout_s

    async def start(self) -> None:
        """Begin connecting; returns at once."""
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-producer")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers,
                client_id=self._client_id,
                acks="all",
                linger_ms=0,
                # The embedded broker refuses the idempotent producer; consumers dedupe on event_id.
                enable_idempotence=False,
                request_timeout_ms=10_000,
            )
            try:
                await producer.start()
            except KafkaError as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning("broker unreachable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            self._connected.set()
            return

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the producer is connected."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def connected(self) -> bool:
        """Whether the producer has connected at least once."""
        return self._producer is not None

    async def ping(self) -> bool:
        """Whether the broker answers a metadata request now."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailable("not connected to the broker yet")
        return self._producer

    async def _bounded(self, operation: Awaitable[None]) -> None:
        """Run a send, refusing to wait forever.

        A producer whose broker went away and came back can keep waiting on batches
        that will never be acknowledged. After ``send_timeout_s`` the send fails like
        any broker outage (the caller retries; consumers dedupe on event_id), and the
        producer is replaced by a fresh one.
        """
        try:
            await asyncio.wait_for(operation, self.send_timeout_s)
        except TimeoutError as exc:
            self._replace_producer()
            raise BrokerUnavailable(f"no acknowledgement within {self.send_timeout_s}s") from exc
        except KafkaError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def _replace_producer(self) -> None:
        stale, self._producer = self._producer, None
        self._connected.clear()
        if stale is not None:
            closing = asyncio.create_task(self._close_quietly(stale))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if self._connector is None or self._connector.done():
            self._connector = asyncio.create_task(self._connect_forever(), name="kafka-producer")

    async def _close_quietly(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5)

    async def publish(self, envelope: Envelope, *, topic: str, key: str) -> None:
        """Publish one envelope and wait for the acknowledgement."""
        producer = self._require()
        await self._bounded(producer.send_and_wait(topic, envelope.to_bytes(), key=key.encode()))

    async def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        """Send every item, then wait for all acknowledgements."""
        producer = self._require()

        async def send_all() -> None:
            futures = [
                await producer.send(topic, envelope.to_bytes(), key=key.encode())
                for envelope, topic, key in items
            ]
            await asyncio.gather(*futures)

        await self._bounded(send_all())

    def _partition_of(self, topic: str, key: bytes, partitions: list[int]) -> int:
        cache_key = (topic, len(partitions), key)
        partition = self._partition_cache.get(cache_key)
        if partition is None:
            if len(self._partition_cache) >= 500_000:
                self._partition_cache.clear()
            partition = int(self._partitioner(key, partitions, partitions))
            self._partition_cache[cache_key] = partition
        return partition

    async def publish_encoded(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` messages in per-partition batches, then wait for all
        acknowledgements; partitions as :meth:`publish` would choose them (murmur2 of the key).
        """
        producer = self._require()
        await self._bounded(self._send_encoded(producer, topic, messages))

    async def _send_encoded(
        self, producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[bytes, bytes]]
    ) -> None:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in messages:
            by_partition.setdefault(self._partition_of(topic, key, partitions), []).append(
                (key, value)
            )
        futures: list[Awaitable[Any]] = []
        for partition, items in by_partition.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is not None:
                    continue
                # The batch is full: send it and start another.
                if batch.record_count():
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is not None:
                        continue
                # Too big for any batch: send it on its own.
                futures.append(await producer.send(topic, value, key=key, partition=partition))
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    async def stop(self) -> None:
        """Flush and close."""
        await cancel(self._connector)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        for closing in list(self._closing):
            with contextlib.suppress(Exception):
                await closing


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str] = TOPICS,
    *,
    partitions: int = 3,
    with_dead_letters: bool = True,
    attempts: int = 5,
    attempt_timeout_s: float = 15.0,
) -> None:
    """Create the topics (and their dead-letter topics) if they do not exist yet.

    Each attempt is bounded by ``attempt_timeout_s``: a broker that accepts the
    connection but never answers (still starting, or stalled) is asked again after a
    backoff instead of holding its caller forever; the last failure is raised."""
    names = list(topics)
    if with_dead_letters:
        names += [dead_letter_topic(t) for t in names]
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(attempt_timeout_s):
                await _create_missing(bootstrap_servers, names, partitions)
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            if attempt == attempts:
                raise
            log.warning("creating topics failed (attempt %d): %r; trying again", attempt, exc)
            await asyncio.sleep(min(0.25 * 2**attempt, 4.0))


async def _create_missing(bootstrap_servers: str, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()
