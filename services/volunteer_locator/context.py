"""The locator's context: everything its routes, handlers and sweeper need, wired once in
``create_app`` (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.volunteer_locator.eta import EtaProvider
from services.volunteer_locator.index import GeoIndex
from services.volunteer_locator.metrics import LocatorMetrics
from services.volunteer_locator.settings import LocatorSettings
from shared.clock import Clock
from shared.db import SessionFactory
from shared.kafka import Publisher
from shared.uow import UnitsOfWork


@dataclass
class Locator:
    """The locator's settings, registry, geo index, ETA provider, publisher, metrics and clock."""

    settings: LocatorSettings
    sessions: SessionFactory
    work: UnitsOfWork
    publisher: Publisher
    index: GeoIndex
    eta: EtaProvider
    metrics: LocatorMetrics
    clock: Clock
    # Pings older than this have already been swept out of the GEO keys.
    stale_swept_until: float = field(default=float("-inf"), init=False)
