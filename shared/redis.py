"""Redis helpers: the client, the readiness ping and the consumer dedupe store."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

# A redelivery comes within minutes of the first delivery (a rebalance, a restart), so
# hours cover it with room to spare; days only fill Redis with ids nobody asks about.
DEDUPE_TTL_S = 6 * 3600


def create_redis(url: str, *, max_connections: int = 256) -> Redis:
    """A connection-pooled async client that returns ``str``.

    The pool blocks (briefly) when all its connections are in use instead of failing,
    so a burst of clients, such as hundreds of live streams reconnecting at once,
    waits its turn rather than erroring.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=max_connections,
        timeout=5,
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


async def ping(redis: Redis) -> bool:
    """Whether Redis answers."""
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False


class RedisDedupeStore:
    """Event ids a consumer group has handled, kept for ``ttl_s`` under the service's prefix."""

    def __init__(self, redis: Redis, *, namespace: str, ttl_s: int = DEDUPE_TTL_S) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl_s = ttl_s

    def _key(self, event_id: str) -> str:
        return f"{self._namespace}:handled:{event_id}"

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Return the ids already handled."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.exists(self._key(event_id))
            found = await pipe.execute()
        return {eid for eid, hit in zip(event_ids, found, strict=True) if hit}

    async def mark(self, event_ids: Sequence[str]) -> None:
        """Record ids as handled."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.set(self._key(event_id), 1, ex=self._ttl_s)
            await pipe.execute()
