"""The delivery workers: they send pending deliveries, retry them and dead-letter failures.

Two lanes with their own bounded queues and workers: ``live`` for the stream channel
and ``remote`` for webhooks and SMS, so a slow receiver never delays a live stream.
The live lane has one queue and worker per shard, chosen by recipient, so each
responder sees messages in the order the events came (an offer before its withdrawal).
Each delivery has one owner at a time, among several instances and after a restart: a
lease on its row. A delivery the consume loop has just written comes already leased to
this instance; any other (the sweep's, a redelivered event's) is claimed first with a
conditional UPDATE. Work that did not fit in a queue, or whose owner died, is picked up
by the resume sweep once its lease has run out. An attempt and, when it is the last,
the delivery's outcome are written in one transaction.

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
from datetime import datetime, timedelta

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
# At most this many live deliveries are sent and recorded together.
LIVE_GROUP = 50


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
        # Each item is a delivery's id, with the row itself when it is leased to us.
        self._queues: dict[str, asyncio.Queue[tuple[uuid.UUID, Delivery | None]]] = {
            f"live-{n}": asyncio.Queue(queue_size) for n in range(live_workers)
        }
        self._queues["remote"] = asyncio.Queue(queue_size)
        self._workers = {**dict.fromkeys(self._queues, 1), "remote": remote_workers}
        self._queued: set[uuid.UUID] = set()
        # Deliveries this instance holds a lease on: in flight, or queued as written.
        self._held: set[uuid.UUID] = set()
        # Leased deliveries that found their queue full: the sweep gives their leases up.
        self._overflow: set[uuid.UUID] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the workers and the resume sweep (which first resumes unfinished work)."""
        for lane, count in self._workers.items():
            for n in range(count):
                self._tasks.append(asyncio.create_task(self._work(lane), name=f"{lane}-{n}"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="delivery-resume"))

    async def stop(self) -> None:
        """Stop at once; unfinished deliveries stay pending and resume on the next start."""
        interrupted = list(self._held)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel(task)
        self._tasks.clear()
        if interrupted:
            # Give up our leases, so another instance (or our restart) resumes at once.
            with contextlib.suppress(Exception):
                await self._release(interrupted)

    async def _release(self, delivery_ids: Sequence[uuid.UUID]) -> None:
        """Give up the leases on these deliveries, where they are still pending."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(Delivery)
                .where(col(Delivery.id).in_(delivery_ids), col(Delivery.status) == "pending")
                .values(lease_until=None)
            )

    def submit(self, deliveries: Sequence[Delivery], *, leased: bool = False) -> None:
        """Queue deliveries; what does not fit waits for the resume sweep. ``leased`` ones
        were written leased to this instance and are sent as they are, with no claim."""
        for delivery in deliveries:
            if delivery.id in self._queued:
                continue
            lane = (
                f"live-{zlib.crc32(delivery.recipient.encode()) % self._live_shards}"
                if delivery.channel in LIVE_CHANNELS
                else "remote"
            )
            try:
                self._queues[lane].put_nowait((delivery.id, delivery if leased else None))
            except asyncio.QueueFull:
                log.warning("%s delivery queue full; the resume sweep will send it", lane)
                if leased:
                    self._overflow.add(delivery.id)  # its lease is given up at the sweep
                continue
            self._queued.add(delivery.id)
            if leased:
                self._held.add(delivery.id)

    async def _work(self, lane: str) -> None:
        queue = self._queues[lane]
        while True:
            items = [await queue.get()]
            if lane != "remote":
                # A live shard takes what has queued up meanwhile, in order, as one group.
                while len(items) < LIVE_GROUP and not queue.empty():
                    items.append(queue.get_nowait())
            try:
                await self._work_on(items)
            except Exception:
                # The rows stay pending and their leases run out; the sweep tries again.
                log.exception("delivery worker failed")
            finally:
                for delivery_id, _ in items:
                    self._queued.discard(delivery_id)

    async def _work_on(self, items: Sequence[tuple[uuid.UUID, Delivery | None]]) -> None:
        """Send queued deliveries in order: runs of leased live ones as a group, each
        other one on its own."""
        group: list[Delivery] = []
        for delivery_id, leased in items:
            if leased is not None and leased.channel in LIVE_CHANNELS:
                group.append(leased)
                continue
            await self._send_group(group)
            group = []
            if leased is None:
                await self.deliver(delivery_id)
            else:
                await self._deliver_leased(leased)
        await self._send_group(group)

    async def _send_group(self, group: Sequence[Delivery]) -> None:
        """Send leased live deliveries in order and record those sent in one transaction.
        From the first that fails, the rest go one at a time the usual way (in order), each
        attempt recorded; the group's failed try is not one of them."""
        sent: list[tuple[Delivery, float]] = []
        self._held.update(d.id for d in group)
        try:
            for index, delivery in enumerate(group):
                channel = self._channels.get(delivery.channel)
                started = time.perf_counter()
                try:
                    if channel is None:
                        raise DeliveryError(f"channel {delivery.channel} is off", permanent=True)
                    await channel.send(delivery)
                except Exception:
                    await self._record_sent(sent)
                    sent = []
                    for rest in group[index:]:
                        await self._deliver_claimed(rest)
                    return
                sent.append((delivery, (time.perf_counter() - started) * 1000))
            await self._record_sent(sent)
        finally:
            self._held.difference_update(d.id for d in group)

    async def _record_sent(self, sent: Sequence[tuple[Delivery, float]]) -> None:
        """Each delivery's successful attempt and its ``sent`` status, in one transaction."""
        if not sent:
            return
        now = self._clock.now()
        async with transaction(self._sessions) as session:
            session.add_all(
                _attempt_row(delivery, delivery.attempts + 1, "sent", latency_ms, None, now)
                for delivery, latency_ms in sent
            )
            await session.exec(
                update(Delivery)
                .where(col(Delivery.id).in_([delivery.id for delivery, _ in sent]))
                .values(attempts=col(Delivery.attempts) + 1, **_outcome("sent", None, now))
            )
        for delivery, _ in sent:
            delivery.attempts += 1
            delivery.status = "sent"
            await self._finish(delivery, status="sent", error=None)

    async def _sweep(self) -> None:
        while True:
            try:
                await self.resume_once()
            except Exception:
                log.exception("delivery resume sweep failed")
            await asyncio.sleep(self._resume_interval_s)

    async def resume_once(self) -> None:
        """Queue pending deliveries nobody owns, and retry dead letters not yet published."""
        if self._overflow:
            overflow, self._overflow = list(self._overflow), set()
            await self._release(overflow)
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

    def lease_for(self, channel: str) -> timedelta:
        """How long this instance owns a delivery on ``channel`` once it holds it."""
        return self._live_lease if channel in LIVE_CHANNELS else self._lease

    async def deliver(self, delivery_id: uuid.UUID) -> None:
        """Claim one delivery, send it with retries, then mark it sent or failed (and
        dead-letter it)."""
        if not await self._claim(delivery_id):
            return
        async with self._sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
        if delivery is not None:
            await self._deliver_leased(delivery)

    async def _deliver_leased(self, delivery: Delivery) -> None:
        self._held.add(delivery.id)
        try:
            await self._deliver_claimed(delivery)
        finally:
            self._held.discard(delivery.id)

    async def _deliver_claimed(self, delivery: Delivery) -> None:
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
        values: dict[str, object] = {"attempts": number}
        if outcome == "retry":
            # Each attempt renews the lease, so a long retry run keeps its owner.
            values["lease_until"] = now + self.lease_for(delivery.channel)
        else:
            values.update(_outcome(outcome, error, now))
        async with transaction(self._sessions) as session:
            session.add(_attempt_row(delivery, number, outcome, latency_ms, error, now))
            await session.exec(
                update(Delivery).where(col(Delivery.id) == delivery.id).values(values)
            )
        delivery.attempts = number
        if outcome != "retry":
            delivery.status = outcome
        if outcome == "retry":
            self._metrics.retries.labels(delivery.channel).inc()
        if error is not None:
            raise error

    async def _finish(self, delivery: Delivery, *, status: str, error: str | None) -> None:
        now = self._clock.now()
        delivery.last_error = None if error is None else error[:500]
        if delivery.status != status:
            # No attempt recorded it (a channel that is off).
            async with transaction(self._sessions) as session:
                await session.exec(
                    update(Delivery)
                    .where(col(Delivery.id) == delivery.id)
                    .values(_outcome(status, error, now))
                )
            delivery.status = status
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


def _outcome(status: str, error: object | None, now: datetime) -> dict[str, object]:
    """The columns that settle a delivery as ``sent`` or ``failed``."""
    if status == "sent":
        return {"status": status, "lease_until": None, "sent_at": now}
    return {"status": status, "lease_until": None, "last_error": str(error or "")[:500]}


def _attempt_row(
    delivery: Delivery,
    number: int,
    outcome: str,
    latency_ms: float,
    error: DeliveryError | None,
    now: datetime,
) -> DeliveryAttempt:
    """The log row of one attempt at ``delivery``."""
    return DeliveryAttempt(
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
