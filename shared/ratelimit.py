"""Fixed-window rate limits kept in Redis, checked in one atomic Lua call.

Each service gives its limiter its own key namespace (intake's reports, notification's
webhook registrations)."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Counts one hit on every key and answers how many ms to wait (0: allowed). One script,
# so the check and the count cannot interleave with another instance's.
_HIT = """
local window_ms = tonumber(ARGV[1])
local wait_ms = 0
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if count == 1 or ttl < 0 then
    redis.call('PEXPIRE', key, window_ms)
    ttl = window_ms
  end
  if count > tonumber(ARGV[i + 1]) and ttl > wait_ms then
    wait_ms = ttl
  end
end
return wait_ms
"""


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` hits per window on the bucket named ``bucket``."""

    bucket: str
    limit: int


class RateLimiter(Protocol):
    """Counts requests against limits."""

    async def hit(self, limits: Sequence[Limit], *, window_s: int) -> int:
        """Count one request on every limit; return seconds to wait, or 0 if allowed."""
        ...


def bucket(kind: str, identity: str) -> str:
    """A bucket name that keeps device ids and addresses out of Redis keys."""
    return f"{kind}:{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


class RedisRateLimiter:
    """Fixed windows in Redis, shared by every instance of a service."""

    def __init__(self, redis: Redis, *, namespace: str) -> None:
        self._script = redis.register_script(_HIT)
        self._namespace = namespace

    async def hit(self, limits: Sequence[Limit], *, window_s: int) -> int:
        """Count one request on every limit; return seconds to wait, or 0 if allowed."""
        if not limits:
            return 0
        keys = [f"{self._namespace}:{limit.bucket}" for limit in limits]
        args = [window_s * 1000, *(limit.limit for limit in limits)]
        try:
            wait_ms = int(await self._script(keys=keys, args=args))
        except (RedisError, OSError) as exc:
            # Fail open: refusing an emergency report because Redis blinked is the worse
            # harm; webhook registrations keep their hard per-report cap in the database.
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return 0
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0
