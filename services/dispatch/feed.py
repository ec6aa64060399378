"""The live queue's change feed: every committed change to an incident, fanned out to
every dispatch instance's console streams through a Redis pub/sub channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "dispatch:queue"


class QueueFeed(Protocol):
    """Publishes queue changes and lets a console stream follow them."""

    async def publish(self, change: dict[str, Any]) -> None:
        """Announce one change (best effort: the queue itself is the truth)."""
        ...

    def follow(self) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Subscribe now; iterate to get every change published from then on."""
        ...


class RedisQueueFeed:
    """The feed on a Redis channel, so it works across instances."""

    def __init__(self, redis: Redis, *, channel: str = CHANNEL) -> None:
        self._redis = redis
        self._channel = channel

    async def publish(self, change: dict[str, Any]) -> None:
        """Publish; a Redis hiccup only delays the console until its next refresh."""
        try:
            await self._redis.publish(self._channel, json.dumps(change))
        except (RedisError, OSError) as exc:
            log.warning("queue feed publish failed: %s", exc)

    @asynccontextmanager
    async def follow(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Subscribe at once (so nothing published after this is missed), then stream."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)

        async def changes() -> AsyncIterator[dict[str, Any]]:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    yield json.loads(message["data"])

        try:
            yield changes()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(self._channel)
                await pubsub.aclose()  # type: ignore[no-untyped-call]


class MemoryQueueFeed:
    """An in-process feed for unit tests."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self._followers: list[asyncio.Queue[dict[str, Any]]] = []

    async def publish(self, change: dict[str, Any]) -> None:
        """Record and hand to every follower."""
        self.published.append(change)
        for queue in self._followers:
            queue.put_nowait(change)

    @asynccontextmanager
    async def follow(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Changes published after the call."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.append(queue)

        async def changes() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield await queue.get()

        try:
            yield changes()
        finally:
            self._followers.remove(queue)
