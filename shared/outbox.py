"""The transactional outbox: a state change and the event announcing it never part.

A service stages its events in the ``outbox`` table inside the same transaction
as the state change. The relay then publishes them in order and marks them sent.
A crash or a lost broker between the two only delays the event; it never loses
it, and never publishes one whose state was rolled back.

Published rows are kept for a retention window (``OUTBOX_RETENTION_S``). When the
broker comes back without its topics (the embedded broker keeps them in memory only;
see :mod:`shared.broker_epoch`), the relay publishes the rows of that window again.
Consumers skip what they had already handled (they dedupe on ``event_id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.broker_epoch import BrokerEpochWatch
from shared.db import UtcDateTime, is_sqlite
from shared.events import Envelope, Event
from shared.kafka import BrokerUnavailable, Publisher
from shared.tasks import finish, wait_until_set

log = logging.getLogger(__name__)

KEEP_PUBLISHED = timedelta(hours=1)
PURGE_EVERY = timedelta(minutes=1)
REPUBLISH_CHECK_MAX_AGE_S = 0.25


def define_outbox_table(metadata: MetaData) -> Table:
    """Add the outbox table to a service's metadata."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("value", Text, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
        Column("published_at", UtcDateTime(), nullable=True, index=True),
    )


async def stage(
    session: AsyncSession,
    table: Table,
    event: Event,
    *,
    correlation_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Add ``event`` to the outbox inside the caller's transaction."""
    envelope, row = outbox_row(event, correlation_id=correlation_id, occurred_at=occurred_at)
    await session.exec(insert(table).values(**row))
    return envelope


def outbox_row(
    event: Event, *, correlation_id: str | None = None, occurred_at: datetime | None = None
) -> tuple[Envelope, dict[str, str]]:
    """The envelope for ``event`` and its outbox row (columns to insert)."""
    envelope = Envelope.wrap(event, correlation_id=correlation_id, occurred_at=occurred_at)
    row = {
        "event_id": str(envelope.event_id),
        "topic": event.topic,
        "key": event.key,
        "value": envelope.model_dump_json(),
    }
    return envelope, row


class OutboxRelay:
    """Publishes staged events, at once when kicked and on a slow timer as a safety net."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        table: Table,
        publisher: Publisher,
        service: str,
        registry: CollectorRegistry,
        poll_interval_s: float = 1.0,
        batch_size: int = 200,
        retention_s: float = KEEP_PUBLISHED.total_seconds(),
        broker_epoch: BrokerEpochWatch | None = None,
    ) -> None:
        self._engine = engine
        self._table = table
        self._publisher = publisher
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_purge = datetime.now(UTC)
        self._lock_rows = not is_sqlite(str(engine.url))
        self._retention = timedelta(seconds=retention_s)
        self._broker_epoch = broker_epoch
        prefix = service.replace("-", "_")
        self.published = Counter(
            f"{prefix}_outbox_published_total",
            "Events the outbox relay has published.",
            registry=registry,
        )
        self.relay_seconds = Histogram(
            f"{prefix}_outbox_relay_seconds",
            "From an event's occurred_at (its transaction) to the broker acknowledging it.",
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.pending = Gauge(
            f"{prefix}_outbox_pending_events",
            "Events saved in the outbox and not yet published.",
            registry=registry,
        )
        self.republished = Counter(
            f"{prefix}_outbox_republished_total",
            "Published events sent again because the broker had lost its topics.",
            registry=registry,
        )

    def kick(self) -> None:
        """Publish now: call right after committing a transaction that staged events."""
        self._wake.set()

    async def start(self) -> None:
        """Start the relay loop."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop after the batch in hand."""
        self._stopping = True
        self._wake.set()
        await finish(self._task, timeout_s=5)
        if self._broker_epoch is not None:
            await self._broker_epoch.close()

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            await wait_until_set(self._wake, self._poll_interval_s)
            self._wake.clear()
            try:
                await self._republish_if_broker_lost()
                while await self.relay_once() == self._batch_size:
                    pass
                await self._purge_if_due()
                delay = 0.1
            except BrokerUnavailable as exc:
                log.warning("outbox relay waiting for the broker: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _republish_if_broker_lost(self, *, max_age_s: float | None = None) -> None:
        """If the broker lost its topics, mark the rows published within the retention
        window as unpublished again, so that the relay sends them in their old order."""
        if self._broker_epoch is None:
            return
        if not await self._broker_epoch.lost_topics(max_age_s=max_age_s):
            return
        t = self._table
        since = datetime.now(UTC) - self._retention
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.published_at.is_not(None), t.c.published_at >= since)
                .values(published_at=None)
            )
        count = int(result.rowcount or 0)
        self.republished.inc(count)
        if count:
            log.warning(
                "the broker lost its topics; republishing %d events from the last %.0fs",
                count,
                self._retention.total_seconds(),
            )

    async def _purge_if_due(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        t = self._table
        async with self._engine.begin() as conn:
            await conn.execute(delete(t).where(t.c.published_at < now - self._retention))

    async def relay_once(self) -> int:
        """Publish one batch of pending events in order; return how many went out."""
        # Ask the broker whether it is still the one we published to, so that nothing
        # new reaches a restarted broker before what it lost is marked to go again.
        await self._republish_if_broker_lost(max_age_s=REPUBLISH_CHECK_MAX_AGE_S)
        t = self._table
        async with self._engine.begin() as conn:
            query = (
                select(t.c.id, t.c.topic, t.c.key, t.c.value)
                .where(t.c.published_at.is_(None))
                .order_by(t.c.id)
                .limit(self._batch_size)
            )
            if self._lock_rows:
                # Several instances of a service share one outbox. One relay at a time keeps
                # the per-key order of the topic equal to the commit order of the rows.
                got_turn = await conn.scalar(
                    text(
                        "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.outbox'))"
                    )
                )
                if not got_turn:
                    # Another instance is relaying; look again shortly rather than at the
                    # next poll, in case our kick's rows are not in its batch.
                    self._wake.set()
                    await asyncio.sleep(0.02)
                    return 0
                query = query.with_for_update(skip_locked=True)
            rows: Sequence[tuple[int, str, str, str]] = [
                (r.id, r.topic, r.key, r.value) for r in (await conn.execute(query)).all()
            ]
            if not rows:
                self.pending.set(0)
                return 0
            envelopes = [
                (Envelope.model_validate_json(value), topic, key) for _, topic, key, value in rows
            ]
            await self._publisher.publish_many(envelopes)
            acknowledged = datetime.now(UTC)
            for envelope, _, _ in envelopes:
                delay_s = (acknowledged - envelope.occurred_at).total_seconds()
                self.relay_seconds.observe(max(0.0, delay_s))
            await conn.execute(
                update(t)
                .where(t.c.id.in_([row[0] for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
            remaining: int | None = 0
            if len(rows) == self._batch_size:
                # Only a full batch can leave a backlog; a short one took everything pending
                # (the next kick publishes what commits meanwhile). Skipping the count keeps
                # the write transaction, which blocks the service's own writes, short.
                remaining = await conn.scalar(
                    select(func.count()).select_from(t).where(t.c.published_at.is_(None))
                )
        self.published.inc(len(rows))
        self.pending.set(remaining or 0)
        return len(rows)
