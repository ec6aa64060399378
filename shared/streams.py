"""Per-caller caps on concurrent live streams, and streams that end when their token is revoked.

The count is kept in process, per instance: a stream is one long request held by one
instance, so its slot lives and dies with it (a crash cannot leak a count the way a
Redis counter could). Behind N instances a caller may hold up to N times the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from shared.auth import Principal
from shared.errors import ApiError, error_responses


def caller_key(principal: Principal) -> str:
    """Whose streams count together: one role and subject."""
    return f"{principal.role.value}:{principal.subject}"


class StreamSlot:
    """One open live stream of one caller; released once, however the stream ends."""

    def __init__(self, limiter: StreamLimiter, key: str, issued_at: float) -> None:
        self._limiter = limiter
        self.key = key
        self.issued_at = issued_at
        self.ended = asyncio.Event()
        self._released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._limiter._forget(self)


class StreamLimiter:
    """Counts each caller's open live streams and refuses one more than the cap with 429."""

    def __init__(self, *, max_per_caller: int, retry_after_s: int) -> None:
        self.max_per_caller = max_per_caller
        self.retry_after_s = retry_after_s
        self._open: dict[str, set[StreamSlot]] = {}

    def open_for(self, principal: Principal) -> int:
        """How many streams the caller holds on this instance."""
        return len(self._open.get(caller_key(principal), ()))

    def acquire(self, principal: Principal) -> StreamSlot:
        """Take a slot for the caller, or raise 429 with ``Retry-After``."""
        key = caller_key(principal)
        held = self._open.setdefault(key, set())
        if len(held) >= self.max_per_caller:
            raise ApiError(
                429,
                "too_many_streams",
                f"at most {self.max_per_caller} live streams at once; close one and retry",
                {"max_streams": self.max_per_caller},
                headers={"Retry-After": str(self.retry_after_s)},
            )
        slot = StreamSlot(self, key, principal.issued_at)
        held.add(slot)
        return slot

    def end_streams(self, key: str, *, issued_up_to: float) -> int:
        """End the caller's streams opened with a token issued at or before ``issued_up_to``."""
        ended = 0
        for slot in list(self._open.get(key, ())):
            if slot.issued_at <= issued_up_to:
                slot.ended.set()
                ended += 1
        return ended

    def _forget(self, slot: StreamSlot) -> None:
        held = self._open.get(slot.key)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._open[slot.key]


class CappedEventSourceResponse(EventSourceResponse):
    """An SSE response that holds a :class:`StreamSlot`: it frees the slot when the
    stream ends, and ends the stream when the slot is ended (a revoked token)."""

    def __init__(self, content: AsyncIterable[Any], *, slot: StreamSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def end_when_told() -> None:
                    await self._slot.ended.wait()
                    group.cancel_scope.cancel()

                group.start_soon(end_when_told)
                await super().__call__(scope, receive, send)
                group.cancel_scope.cancel()
            if self._slot.ended.is_set():
                # Cut short mid-stream: finish the body so the client sees a clean end.
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._slot.release()


def capped_stream(
    limiter: StreamLimiter, principal: Principal, content: AsyncIterable[Any], **kwargs: Any
) -> CappedEventSourceResponse:
    """An SSE response for ``principal``, counted against its cap (429 beyond)."""
    return CappedEventSourceResponse(content, slot=limiter.acquire(principal), **kwargs)


async def get_stream_limiter(request: Request) -> StreamLimiter:
    """This instance's live-stream limiter (built with the app)."""
    limiter: StreamLimiter = request.app.state.stream_limiter
    return limiter


StreamLimiterDep = Annotated[StreamLimiter, Depends(get_stream_limiter)]

# What a capped live-stream route may answer besides 200, for its ``responses=``.
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = error_responses(
    429, notes={429: "The caller already holds the maximum of live streams"}
)
