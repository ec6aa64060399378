"""Live streams without a Redis connection per client.

Each instance holds one pub/sub subscription on ``notification:live``. The stream
channel publishes the recipient's id there after each XADD; the hub wakes that
recipient's local clients, which then read their Redis Stream from their last id
with ``XRANGE``. Pub/sub carries only wake-ups, so a lost one costs a moment (the
clients also re-read on a timer and after the subscription comes back), never a message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from services.notification.channels import LIVE_CHANNEL, stream_key
from shared.wakeups import Wakeups


class LiveHub(Wakeups):
    """Wakes this instance's stream clients when their stream grows (keyed by recipient)."""

    def __init__(self, redis: Redis, *, channel: str = LIVE_CHANNEL) -> None:
        super().__init__(redis, channel=channel)

    async def messages(
        self, *, recipient: str, after: str, poll_s: float
    ) -> AsyncIterator[dict[str, str]]:
        """Every message on the recipient's stream after ``after``: the missed ones, then live."""
        key = stream_key(recipient)
        last = after
        async with self.watch(recipient) as watch:
            while True:
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
                await watch.wait(poll_s)
