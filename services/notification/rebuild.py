"""Putting the live streams back when Redis comes back empty or different.

The delivery log in the database is the truth; each recipient's Redis Stream is a
replay log of it. After Redis lost the streams, every stream delivery of the last
``stream_rebuild_window_s`` (sent, or still pending: it may have reached the lost
stream before its row was marked sent) goes back on its recipient's stream in order,
at most ``stream_maxlen`` per recipient. The new entries have new ids, later than any
the clients saw, so a client that reconnects with its ``Last-Event-ID``, or one that
stayed connected, reads them all: what it had missed, and again what it had read
(at least once; messages carry ``event_id`` and ``offer_id``). Offers already past
their expiry are left out: they cannot be answered any more.

Push subscriptions need nothing here: they live in the database. Delivery markers
come back with the entries; rate-limit windows start afresh.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta

from redis.asyncio import Redis
from sqlmodel import col, select

from services.notification.channels import StreamChannel
from services.notification.metrics import NotificationMetrics
from services.notification.models import Delivery
from services.notification.settings import NotificationSettings
from shared.clock import Clock
from shared.db import SessionFactory
from shared.redis_epoch import RedisEpoch

log = logging.getLogger(__name__)

STARTUP = "startup"


def _still_relevant(delivery: Delivery, now: datetime) -> bool:
    """False for an offer whose answer window has closed."""
    message = json.loads(delivery.message)
    if message.get("type") != "offer" or not message.get("expires_at"):
        return True
    return datetime.fromisoformat(message["expires_at"]) > now


def recent_by_recipient(
    deliveries: Sequence[Delivery], *, now: datetime, per_recipient: int
) -> dict[str, list[Delivery]]:
    """The relevant deliveries, oldest first, the newest ``per_recipient`` of each recipient."""
    grouped: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        if _still_relevant(delivery, now):
            grouped.setdefault(delivery.recipient, []).append(delivery)
    return {r: rows[-per_recipient:] for r, rows in grouped.items()}


async def rebuild_streams(
    *,
    sessions: SessionFactory,
    stream: StreamChannel,
    now: datetime,
    window_s: float,
    per_recipient: int,
) -> int:
    """Put the recent stream deliveries back on their streams; how many entries were added."""
    async with sessions() as session:
        rows = (
            await session.exec(
                select(Delivery)
                .where(
                    Delivery.channel == "stream",
                    col(Delivery.status).in_(("sent", "pending")),
                    col(Delivery.created_at) >= now - timedelta(seconds=window_s),
                )
                .order_by(col(Delivery.created_at), col(Delivery.sent_at))
            )
        ).all()
    added = 0
    recipients = recent_by_recipient(rows, now=now, per_recipient=per_recipient)
    for recipient, deliveries in recipients.items():
        added += await stream.restore(recipient, deliveries)
    log.warning(
        "live streams rebuilt: %d entries for %d recipients from %d deliveries",
        added,
        len(recipients),
        len(rows),
    )
    return added


async def keep_streams(
    stack: AsyncExitStack,
    *,
    redis: Redis,
    sessions: SessionFactory,
    stream: StreamChannel,
    settings: NotificationSettings,
    metrics: NotificationMetrics,
    clock: Clock,
) -> RedisEpoch:
    """Rebuild the streams now if Redis lost them while we were down (no epoch key), and
    whenever the epoch key shows it lost them while we run; the watch ends with ``stack``."""

    async def rebuild(reason: str) -> None:
        added = await rebuild_streams(
            sessions=sessions,
            stream=stream,
            now=clock.now(),
            window_s=settings.stream_rebuild_window_s,
            per_recipient=settings.stream_maxlen,
        )
        metrics.restored.inc(added)
        if reason != STARTUP:
            metrics.redis_rebuilds.labels(reason).inc()

    epoch = RedisEpoch(
        redis,
        service=settings.service_name,
        rebuild=rebuild,
        interval_s=settings.redis_epoch_interval_s,
    )
    if not await redis.exists(epoch.key):
        await rebuild(STARTUP)
    await stack.enter_async_context(epoch.running())
    return epoch
