"""Live streams without a Redis connection per client.

Each instance holds one pub/sub subscription on ``notification:live``. The stream
channel publishes the recipient's id there after each XADD; the hub wakes that
recipient's local clients, which then read their Redis Stream from their last id
with ``XRANGE``. Pub/sub carries only wake-ups, so a lost one costs a moment (the
clients also re-read on a timer and after the subscription comes back), never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.notification.channels import LIVE_CHANNEL, stream_key

log = logging.getLogger(__name__)


class LiveHub:
    """Wakes this instance's stream clients when their stream grows."""

    def __init__(self, redis: Redis, *, channel: str = LIVE_CHANNEL) -> None:
        self._redis = redis
        self._channel = channel
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe in the background."""
        self._task = asyncio.create_task(self._listen(), name="notification-live")

    async def subscribed(self) -> bool:
        """Whether the subscription is live (a readiness check)."""
        return self._subscribed.is_set()

    async def stop(self) -> None:
        """Drop the subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _wake(self, recipient: str) -> None:
        for wake in self._watchers.get(recipient, ()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                # Anything added while we were not subscribed is re-read now.
                self._wake_all()
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake(str(message["data"]))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("live subscription lost, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def messages(
        self, *, recipient: str, after: str, poll_s: float
    ) -> AsyncIterator[dict[str, str]]:
        """Every message on the recipient's stream after ``after``: the missed ones, then live."""
        key = stream_key(recipient)
        wake = asyncio.Event()
        self._watchers.setdefault(recipient, set()).add(wake)
        last = after
        try:
            while True:
                wake.clear()
                # Exclusive start: everything strictly after the last id sent.
                entries: Any = await self._redis.xrange(key, min=f"({last}", count=100)
                for entry_id, fields in entries:
                    last = entry_id
                    yield {
                        "id": entry_id,
                        "event": fields.get("type", "message"),
                        "data": fields["data"],
                    }
                if entries:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), poll_s)
        finally:
            watchers = self._watchers.get(recipient)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[recipient]
