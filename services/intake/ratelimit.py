"""Intake's rate limits: the shared fixed-window limiter under intake's key namespace."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.ratelimit import Limit, RateLimiter, bucket
from shared.ratelimit import RedisRateLimiter as _SharedLimiter

__all__ = ["Limit", "RateLimiter", "RedisRateLimiter", "bucket"]


class RedisRateLimiter(_SharedLimiter):
    """Fixed windows in Redis, shared by every intake instance."""

    def __init__(self, redis: Redis, *, namespace: str = "intake:ratelimit") -> None:
        super().__init__(redis, namespace=namespace)
