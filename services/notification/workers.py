"""The delivery workers: they send pending deliveries, retry them and dead-letter failures.

Two lanes with their own bounded queues and workers: ``live`` for the stream channel
and ``remote`` for webhooks and SMS, so a slow receiver never delays a live stream.
The live lane has one queue and worker per shard, chosen by recipient, so each
responder sees messages in the order the events came (an offer before its withdrawal).
A worker first takes a lease on the row (a conditional UPDATE), so among several
instances, and after a restart, each delivery has one owner at a time. Work that did
not fit in a queue, or whose owner died, is picked up by the resume sweep.

What fails for good is marked ``failed`` in the log and published as a ``DeadLetter``
on ``incidents.dlq``, the dead-letter topic of the topic the event came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.notification.channels import Channel, DeliveryError
from services.notification.metrics import NotificationMetrics
from services.notification.models import Delivery, DeliveryAttempt
from shared.clock import Clock
from shared.db import SessionFactory, transaction
from shared.events import INCIDENTS, DeadLetter, FailedDelivery, dead_letter_topic
from shared.kafka import BrokerUnavailable, Publisher
from shared.tasks import cancel

log = logging.getLogger(__name__)

DEAD_LETTER_TOPIC = dead_letter_topic(INCIDENTS)
LIVE_CHANNELS = frozenset({"stream"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a delivery is tried."""

    max_attempts: int = 6
    initial_s: float = 0.5
    max_s: float = 30.0
    jitter_s: float = 0.5


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and not exc.permanent


class DeliveryWorkers:
    """Sends deliveries in the background; ``submit`` never waits for a send."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: SessionFactory,
        channels: Mapping[str, Channel],
        publisher: Publisher,
        metrics: NotificationMetrics,
        clock: Clock,
        policy: RetryPolicy,
        live_workers: int = 2,
        remote_workers: int = 8,
        queue_size: int = 1000,
        lease_s: float = 300.0,
        live_lease_s: float = 10.0,
        resume_interval_s: float = 5.0,
        service: str = "notification",
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._channels = channels
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._policy = policy
        self._lease = timedelta(seconds=lease_s)
        # A live delivery is an offer on a 30 s clock: if its owner dies, another
        # instance must take it over well inside that.
        self._live_lease = timedelta(seconds=live_lease_s)
        self._resume_interval_s = resume_interval_s
        self._service = service
        # One queue per live shard, each with a single worker; one shared remote queue.
        self._live_shards = live_workers
        self._queues: dict[str, asyncio.Queue[uuid.UUID]] = {
            f"live-{n}": asyncio.Queue(queue_size) for n in range(live_workers)
        }
        self._queues["remote"] = asyncio.Queue(queue_size)
        self._workers = {**dict.fromkeys(self._queues, 1), "remote": remote_workers}
        self._queued: set[uuid.UUID] = set()
        self._in_flight: set[uuid.UUID] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the workers and the resume sweep (which first resumes unfinished work)."""
        for lane, count in self._workers.items():
            for n in range(count):
                self._tasks.append(asyncio.create_task(self._work(lane), name=f"{lane}-{n}"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="delivery-resume"))

    async def stop(self) -> None:
        """Stop at once; unfinished deliveries stay pending and resume on the next start."""
        interrupted = list(self._in_flight)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel(task)
        self._tasks.clear()
        if interrupted:
            # Give up our leases, so another instance (or our restart) resumes at once.
            with contextlib.suppress(Exception):
                async with self._engine.begin() as conn:
                    await conn.execute(
                        update(Delivery)
                        .where(col(Delivery.id).in_(interrupted), col(Delivery.status) == "pending")
                        .values(lease_until=None)
                    )

    def submit(self, deliveries: Sequence[Delivery]) -> None:
        """Queue deliveries; what does not fit waits for the resume sweep."""
        for delivery in deliveries:
            if delivery.id in self._queued:
                continue
            lane = (
                f"live-{zlib.crc32(delivery.recipient.encode()) % self._live_shards}"
                if delivery.channel in LIVE_CHANNELS
                else "remote"
            )
            try:
                self._queues[lane].put_nowait(delivery.id)
            except asyncio.QueueFull:
                log.warning("%s delivery queue full; the resume sweep will send it", lane)
                continue
            self._queued.add(delivery.id)

    async def _work(self, lane: str) -> None:
        queue = self._queues[lane]
        while True:
            delivery_id = await queue.get()
            try:
                await self.deliver(delivery_id)
            except Exception:
                # The row stays pending and its lease runs out; the sweep tries again.
                log.exception("delivery worker failed")
            finally:
                self._queued.discard(delivery_id)

    async def _sweep(self) -> None:
        while True:
            try:
                await self.resume_once()
            except Exception:
                log.exception("delivery resume sweep failed")
            await asyncio.sleep(self._resume_interval_s)

    async def resume_once(self) -> None:
        """Queue pending deliveries nobody owns, and retry dead letters not yet published."""
        now = self._clock.now()
        async with self._sessions() as session:
            pending = (
                await session.exec(
                    select(Delivery)
                    .where(
                        Delivery.status == "pending",
                        or_(
                            col(Delivery.lease_until).is_(None),
                            col(Delivery.lease_until) < now,
                        ),
                    )
                    .order_by(col(Delivery.created_at))
                    .limit(500)
                )
            ).all()
            unlettered = (
                await session.exec(
                    select(Delivery)
                    .where(Delivery.status == "failed", col(Delivery.dead_lettered_at).is_(None))
                    .limit(100)
                )
            ).all()
        self.submit(pending)
        for delivery in unlettered:
            await self._dead_letter(delivery)

    async def _claim(self, delivery_id: uuid.UUID) -> bool:
        now = self._clock.now()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery_id,
                    col(Delivery.status) == "pending",
                    or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
                )
                .values(
                    lease_until=case(
                        (col(Delivery.channel).in_(sorted(LIVE_CHANNELS)), now + self._live_lease),
                        else_=now + self._lease,
                    )
                )
            )
        return result.rowcount == 1

    def _lease_for(self, channel: str) -> timedelta:
        return self._live_lease if channel in LIVE_CHANNELS else self._lease

    async def deliver(self, delivery_id: uuid.UUID) -> None:
        """Send one delivery with retries, then mark it sent or failed (and dead-letter it)."""
        if not await self._claim(delivery_id):
            return
        self._in_flight.add(delivery_id)
        try:
            await self._deliver_claimed(delivery_id)
        finally:
            self._in_flight.discard(delivery_id)

    async def _deliver_claimed(self, delivery_id: uuid.UUID) -> None:
        async with self._sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
        if delivery is None:
            return
        channel = self._channels.get(delivery.channel)
        remaining = max(1, self._policy.max_attempts - delivery.attempts)
        try:
            if channel is None:
                raise DeliveryError(f"channel {delivery.channel} is off", permanent=True)
            retrying = AsyncRetrying(
                stop=stop_after_attempt(remaining),
                wait=wait_exponential_jitter(
                    multiplier=self._policy.initial_s,
                    max=self._policy.max_s,
                    jitter=self._policy.jitter_s,
                ),
                retry=retry_if_exception(_retryable),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._attempt(channel, delivery)
        except DeliveryError as exc:
            await self._finish(delivery, status="failed", error=str(exc))
            await self._dead_letter(delivery)
            return
        await self._finish(delivery, status="sent", error=None)

    async def _attempt(self, channel: Channel, delivery: Delivery) -> None:
        started = time.perf_counter()
        error: DeliveryError | None = None
        try:
            await channel.send(delivery)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:
            error = DeliveryError(f"{type(exc).__name__}: {exc}")
        latency_ms = (time.perf_counter() - started) * 1000
        number = delivery.attempts + 1
        final = error is not None and (error.permanent or number >= self._policy.max_attempts)
        outcome = "sent" if error is None else ("failed" if final else "retry")
        now = self._clock.now()
        async with transaction(self._sessions) as session:
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    attempt=number,
                    channel=delivery.channel,
                    outcome=outcome,
                    latency_ms=round(latency_ms, 3),
                    error=str(error)[:500] if error else None,
                    event_id=delivery.event_id,
                    incident_id=delivery.incident_id,
                    responder_id=delivery.responder_id,
                    attempted_at=now,
                )
            )
            # Each attempt renews the lease, so a long retry run keeps its owner.
            await session.exec(
                update(Delivery)
                .where(col(Delivery.id) == delivery.id)
                .values(attempts=number, lease_until=now + self._lease_for(delivery.channel))
            )
        delivery.attempts = number
        if outcome == "retry":
            self._metrics.retries.labels(delivery.channel).inc()
        if error is not None:
            raise error

    async def _finish(self, delivery: Delivery, *, status: str, error: str | None) -> None:
        now = self._clock.now()
        values: dict[str, object] = {"status": status, "lease_until": None}
        delivery.status = status
        delivery.last_error = None if error is None else error[:500]
        if status == "sent":
            values["sent_at"] = now
        else:
            values["last_error"] = (error or "")[:500]
        async with transaction(self._sessions) as session:
            await session.exec(
                update(Delivery).where(col(Delivery.id) == delivery.id).values(values)
            )
        self._metrics.deliveries.labels(delivery.channel, status).inc()
        if status == "sent":
            seconds = (now - delivery.occurred_at).total_seconds()
            self._metrics.latency.labels(delivery.channel).observe(max(0.0, seconds))
        else:
            log.warning("delivery failed for good on %s: %s", delivery.channel, error)

    async def _dead_letter(self, delivery: Delivery) -> None:
        now = self._clock.now()
        envelope = DeadLetter(
            group=self._service,
            source_topic=INCIDENTS,
            reason=f"delivery failed: {delivery.last_error or 'gave up'}",
            delivery=FailedDelivery(
                delivery_id=str(delivery.id),
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                channel=delivery.channel,
                audience=delivery.audience,
                recipient=delivery.recipient,
                incident_id=str(delivery.incident_id) if delivery.incident_id else None,
                attempts=delivery.attempts,
            ),
            message=delivery.message,
        ).envelope(correlation_id=str(delivery.incident_id or delivery.event_id), occurred_at=now)
        try:
            await self._publisher.publish(
                envelope, topic=DEAD_LETTER_TOPIC, key=envelope.correlation_id
            )
        except BrokerUnavailable as exc:
            # The row stays failed without dead_lettered_at; the sweep publishes it later.
            log.warning("dead letter waits for the broker: %s", exc)
            return
        async with transaction(self._sessions) as session:
            await session.exec(
                update(Delivery).where(col(Delivery.id) == delivery.id).values(dead_lettered_at=now)
            )
