"""Cross-instance wake-ups for live streams, over one Redis pub/sub subscription.

The database (or a Redis Stream) is the record; a wake-up only tells the streams of
this instance that something they follow may have changed, so they re-read it.
Whoever changes state commits first, then announces the key. Each instance keeps a
single subscription, not one per client, and wakes its local watchers of that key.
Pub/sub is at most once, so a watcher also re-reads on a timer and every watcher is
woken when the subscription comes back: a lost wake-up delays a change, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.tasks import cancel, wait_until_set

log = logging.getLogger(__name__)


class Watch:
    """One client's interest in one key: set when the key may have changed."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Mark the key as possibly changed."""
        self._changed.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a change (True) or until ``timeout`` passes (False); then re-arm."""
        try:
            return await wait_until_set(self._changed, timeout)
        finally:
            self._changed.clear()


class Wakeups:
    """Announces and follows changes to keys on one Redis pub/sub channel."""

    def __init__(self, redis: Redis, *, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._watches: dict[str, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def announce(self, keys: Iterable[object]) -> None:
        """Tell every instance these keys changed; call after the commit."""
        for key in keys:
            try:
                await self._redis.publish(self._channel, str(key))
            except (RedisError, OSError) as exc:
                # The watchers' periodic re-read still picks the change up, just later.
                log.warning("could not announce a change on %s: %s", self._channel, exc)
                self._wake(str(key))

    @asynccontextmanager
    async def watch(self, key: object) -> AsyncIterator[Watch]:
        """Follow one key for as long as the block runs."""
        name = str(key)
        watch = Watch()
        self._watches.setdefault(name, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watches.get(name)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[name]

    async def start(self) -> None:
        """Subscribe in the background."""
        self._task = asyncio.create_task(self._listen(), name=f"wakeups-{self._channel}")

    async def wait_subscribed(self, timeout: float = 10) -> None:
        """Wait until the subscription is live."""
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def subscribed(self) -> bool:
        """Whether the subscription is live (a readiness check)."""
        return self._subscribed.is_set()

    async def stop(self) -> None:
        """Drop the subscription."""
        await cancel(self._task)

    def _wake(self, key: str) -> None:
        for watch in self._watches.get(key, ()):
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
                    if message.get("type") == "message":
                        self._wake(str(message["data"]))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("subscription to %s lost, retrying: %s", self._channel, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
