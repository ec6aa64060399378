"""Responder revocations as each service keeps them: its own Redis keys plus a copy in memory.

A service learns of a revocation from ``ResponderRevoked`` on ``responder-status``. The
instance that consumes it writes ``<service>:revoked`` (responder id to the revocation
time, the latest kept) and bumps ``<service>:revoked:version``; every instance re-reads
the hash when the version moves (every ``REVOCATION_POLL_S``), so the auth check itself
is a dict look-up, never a round trip. One field per revoked responder: bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis

from shared.auth import Principal, Role
from shared.events import Envelope, Event, ResponderRevoked
from shared.kafka import Handler
from shared.settings import ServiceSettings
from shared.streams import StreamLimiter, caller_key
from shared.tasks import cancel

log = logging.getLogger(__name__)

# Keep the later of the held and the new time, and bump the version, in one step.
_RECORD = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and tonumber(held) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
"""

OnRevoked = Callable[[str, float], None]


class Revocations:
    """Which responders were revoked, and when (unix seconds)."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        poll_s: float,
        on_revoked: OnRevoked | None = None,
    ) -> None:
        self._redis = redis
        self._key = f"{namespace}:revoked"
        self._version_key = f"{namespace}:revoked:version"
        self._poll_s = poll_s
        self._on_revoked = on_revoked
        self._revoked_at: dict[str, float] = {}
        self._version: Any = None

    def is_revoked(self, responder_id: str, issued_at: float) -> bool:
        """Whether a token of ``responder_id`` issued at ``issued_at`` must be refused."""
        revoked_at = self._revoked_at.get(responder_id)
        return revoked_at is not None and issued_at <= revoked_at

    def revoked_at(self, responder_id: str) -> float | None:
        """When the responder was last revoked, if ever."""
        return self._revoked_at.get(responder_id)

    async def record(self, responder_id: str, revoked_at: float) -> None:
        """Keep a revocation in Redis and in this instance at once (idempotent)."""
        await self._redis.eval(
            _RECORD, 2, self._key, self._version_key, responder_id, repr(revoked_at)
        )
        self._apply(responder_id, revoked_at)

    async def refresh(self) -> None:
        """Re-read the hash if another instance recorded something since the last read."""
        version = await self._redis.get(self._version_key)
        if version is not None and version == self._version:
            return
        held: dict[Any, Any] = await self._redis.hgetall(self._key)
        for responder_id, revoked_at in held.items():
            rid = responder_id.decode() if isinstance(responder_id, bytes) else str(responder_id)
            self._apply(rid, float(revoked_at))
        self._version = version

    async def follow(self) -> None:
        """Refresh every ``poll_s`` until cancelled; a Redis hiccup is logged and retried."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.warning("could not read revocations; retrying", exc_info=True)
            await asyncio.sleep(self._poll_s)

    def _apply(self, responder_id: str, revoked_at: float) -> None:
        if revoked_at <= self._revoked_at.get(responder_id, float("-inf")):
            return
        self._revoked_at[responder_id] = revoked_at
        if self._on_revoked is not None:
            self._on_revoked(responder_id, revoked_at)


def ending_streams(limiter: StreamLimiter) -> OnRevoked:
    """A callback that ends the revoked responder's live streams on this instance."""

    def end(responder_id: str, revoked_at: float) -> None:
        limiter.end_streams(
            caller_key(Principal(Role.RESPONDER, responder_id)), issued_up_to=revoked_at
        )

    return end


async def open_revocations(
    stack: AsyncExitStack, *, app: FastAPI, redis: Redis, settings: ServiceSettings
) -> Revocations:
    """Load the service's revocations, follow them in the background and let the auth
    check see them (``app.state.revocations``)."""
    revocations = Revocations(
        redis,
        namespace=settings.service_name,
        poll_s=settings.revocation_poll_s,
        on_revoked=ending_streams(app.state.stream_limiter),
    )
    try:
        await revocations.refresh()
    except Exception:
        log.warning("revocations not loaded yet; the background refresh will", exc_info=True)
    task = asyncio.create_task(revocations.follow(), name="revocations")
    stack.push_async_callback(cancel, task)
    app.state.revocations = revocations
    return revocations


async def record_revocation(revocations: Revocations, event: ResponderRevoked) -> None:
    """Keep a consumed ``ResponderRevoked``."""
    await revocations.record(str(event.responder_id), event.revoked_at.timestamp())


def revocation_handlers(revocations: Revocations) -> dict[type[Event], Handler]:
    """The ``responder-status`` handler that keeps revocations (for services with no other)."""

    async def on_revoked(event: Event, _: Envelope) -> None:
        if isinstance(event, ResponderRevoked):
            await record_revocation(revocations, event)

    return {ResponderRevoked: on_revoked}
