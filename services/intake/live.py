"""Live fan-out of report changes to the reporters' streams, across instances.

Design: the database is the truth and notifications are only wake-up calls.

- Whoever changes a report (the ``incidents`` handler or a cancel) commits first, then
  publishes the report id on one Redis pub/sub channel. The instance that handled the
  event is often not the one holding the reporter's stream (partitions and HTTP
  connections land on instances independently), so an in-process signal alone would
  miss them.
- Each instance holds a single subscription to that channel, not one per stream, and
  fans out in process to the streams watching that report id.
- A woken stream re-reads the timeline after the last step it sent. Pub/sub is
  at-most-once, so streams also re-read on a slow timer and after the subscription
  reconnects; a lost message delays a step, it never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "intake:report-changed"


class Watch:
    """One stream's interest in one report: set when the report may have changed."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Mark the report as possibly changed."""
        self._changed.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a change (True) or until ``timeout`` passes (False); then re-arm."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._changed.clear()
        return True


class ReportChanges:
    """Announces and follows report changes over Redis pub/sub."""

    def __init__(self, redis: Redis, *, channel: str = CHANNEL) -> None:
        self._redis = redis
        self._channel = channel
        self._watches: dict[uuid.UUID, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def announce(self, report_ids: set[uuid.UUID] | list[uuid.UUID]) -> None:
        """Tell every instance these reports changed; call after the commit."""
        for report_id in report_ids:
            try:
                await self._redis.publish(self._channel, str(report_id))
            except (RedisError, OSError) as exc:
                # The streams' periodic re-read still delivers the change, just later.
                log.warning("could not announce a report change: %s", exc)
                self._wake(report_id)

    @asynccontextmanager
    async def watch(self, report_id: uuid.UUID) -> AsyncIterator[Watch]:
        """Follow one report for as long as the block runs."""
        watch = Watch()
        self._watches.setdefault(report_id, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watches.get(report_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[report_id]

    async def start(self) -> None:
        """Subscribe in the background."""
        self._task = asyncio.create_task(self._listen(), name="intake-report-changes")

    async def wait_subscribed(self, timeout: float = 10) -> None:
        """Wait until the subscription is live."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def stop(self) -> None:
        """Drop the subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _wake(self, report_id: uuid.UUID) -> None:
        for watch in self._watches.get(report_id, ()):
            watch.notify()

    def _wake_all(self) -> None:
        for watchers in self._watches.values():
            for watch in watchers:
                watch.notify()

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                # Anything announced while we were not subscribed is re-read now.
                self._wake_all()
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    with contextlib.suppress(ValueError):
                        self._wake(uuid.UUID(str(message["data"])))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("report-change subscription lost, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
