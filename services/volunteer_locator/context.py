"""The locator's context: everything its routes, handlers and sweeper need, wired once in
``create_app`` (or a test)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from services.volunteer_locator.eta import EtaProvider
from services.volunteer_locator.index import GeoIndex, PingRow
from services.volunteer_locator.metrics import LocatorMetrics
from services.volunteer_locator.settings import LocatorSettings
from shared.clock import Clock
from shared.db import SessionFactory
from shared.kafka import Publisher
from shared.uow import UnitsOfWork


async def _keep_nothing(_rows: Sequence[PingRow]) -> int:
    return 0


def _noop() -> None:
    return None


@dataclass
class Locator:
    """The locator's settings, registry, Redis, geo index, ETA provider, publisher, metrics
    and clock, with the hooks that keep positions and notice a Redis that lost the index."""

    settings: LocatorSettings
    sessions: SessionFactory
    work: UnitsOfWork
    publisher: Publisher
    redis: Redis
    index: GeoIndex
    eta: EtaProvider
    metrics: LocatorMetrics
    clock: Clock
    # Writes the newest pings to the database (throttled), for rebuilding the index.
    keep_positions: Callable[[Sequence[PingRow]], Awaitable[int]] = _keep_nothing
    # A sign Redis lost the index (a ping from a responder it does not know): check now.
    redis_lost: Callable[[], None] = _noop
    # Pings older than this have already been swept out of the GEO keys.
    stale_swept_until: float = field(default=float("-inf"), init=False)
