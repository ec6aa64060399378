"""Live fan-out of report changes to the reporters' streams, across instances.

The instance that handles an incident event is often not the one holding the
reporter's stream (partitions and HTTP connections land on instances
independently), so changes are announced through ``shared.wakeups`` on one Redis
channel. A woken stream re-reads the timeline after the last step it sent.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.wakeups import Wakeups, Watch

CHANNEL = "intake:report-changed"

__all__ = ["CHANNEL", "ReportChanges", "Watch"]


class ReportChanges(Wakeups):
    """Announces and follows report changes (keyed by report id)."""

    def __init__(self, redis: Redis, *, channel: str = CHANNEL) -> None:
        super().__init__(redis, channel=channel)
