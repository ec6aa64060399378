"""Noticing that Redis came back empty or different, so a service rebuilds what it keeps
there from its own database.

Each service keeps one epoch key (``epoch:<service>``) holding a random token. The
first instance to find it missing writes a new one; every instance remembers the token
it last saw. A check (every ``interval_s``, or at once when someone calls
:meth:`RedisEpoch.check_soon`) that finds the key missing or holding another token
means Redis lost or replaced the service's keys: the instance runs its rebuild and
adopts the token. Redis restarted with its data (AOF) keeps the key, so nothing is
rebuilt needlessly. A check that cannot reach Redis waits for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.tasks import cancel, wait_until_set

log = logging.getLogger(__name__)

Rebuild = Callable[[str], Awaitable[None]]


class RedisEpoch:
    """Watches a service's epoch key and runs ``rebuild(reason)`` when it changes."""

    def __init__(
        self, redis: Redis, *, service: str, rebuild: Rebuild, interval_s: float = 1.0
    ) -> None:
        self._redis = redis
        self._key = f"epoch:{service}"
        self._rebuild = rebuild
        self._interval_s = interval_s
        self._token: str | None = None
        self._poke = asyncio.Event()
        self.rebuilds = 0

    @property
    def key(self) -> str:
        """The epoch key in Redis."""
        return self._key

    async def adopt(self) -> str:
        """Write a token if none is held, and remember the one Redis holds now."""
        await self._redis.set(self._key, uuid.uuid4().hex, nx=True)
        token = await self._redis.get(self._key)
        self._token = str(token)
        return self._token

    async def check(self) -> bool:
        """Rebuild if the key is gone or changed; True if a rebuild ran."""
        held = await self._redis.get(self._key)
        if held is not None and held == self._token:
            return False
        reason = "empty" if held is None else "changed"
        log.warning("Redis came back %s for %s; rebuilding from the database", reason, self._key)
        # Rebuild first, then adopt: a rebuild cut short is retried at the next check.
        await self._rebuild(reason)
        await self.adopt()
        self.rebuilds += 1
        return True

    def check_soon(self) -> None:
        """Check at once instead of at the next tick (a sign Redis lost something)."""
        self._poke.set()

    async def watch(self) -> None:
        """Check every ``interval_s`` (or when poked) until cancelled."""
        while True:
            await wait_until_set(self._poke, self._interval_s)
            self._poke.clear()
            try:
                await self.check()
            except (RedisError, OSError) as exc:
                log.info("epoch check could not reach Redis (%s); next tick", exc)
            except Exception:
                log.exception("rebuild after a Redis change failed; retrying at the next tick")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RedisEpoch]:
        """Adopt the current token and watch in the background for the block."""
        await self.adopt()
        task = asyncio.create_task(self.watch(), name=f"epoch:{self._key}")
        try:
            yield self
        finally:
            await cancel(task)
