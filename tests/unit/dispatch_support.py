"""A dispatch engine on a throwaway SQLite file with a fake clock, locator and feed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select

from services.dispatch import service
from services.dispatch.context import Dispatch
from services.dispatch.feed import MemoryQueueFeed
from services.dispatch.grids import GridIndex
from services.dispatch.locator_client import MemoryLocator
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import OUTBOX, DispatchTable
from services.dispatch.plans import default_plans
from services.dispatch.settings import DispatchSettings
from services.dispatch.timers import fire_due_timers
from shared import db
from shared.clock import FakeClock
from shared.events import AvailabilityChanged, Envelope, Event, GeoPoint, ReportReceived
from tests.harness import AUTH_SECRET

# A spot outside every demo grid, so the plans' default targets apply (60/180/300 s).
HERE = (23.050, 113.750)
# Inside the demo grid DC-01, a key area: targets are halved.
KEY_AREA = (23.020, 113.750)


def north(point: tuple[float, float], metres: float) -> tuple[float, float]:
    """A point ``metres`` north of ``point``."""
    return (point[0] + metres / 111_195.0, point[1])


@dataclass
class Engine:
    """The engine under test and its fakes."""

    dispatch: Dispatch
    clock: FakeClock
    locator: MemoryLocator
    feed: MemoryQueueFeed
    registry: CollectorRegistry

    async def report(
        self,
        category: str = "other",
        at: tuple[float, float] = HERE,
        *,
        received_at: datetime | None = None,
    ) -> uuid.UUID:
        """A citizen's report arrives; returns the incident it opened or joined."""
        event = ReportReceived(
            report_id=uuid.uuid4(),
            category=category,
            location=GeoPoint(lat=at[0], lon=at[1]),
            received_at=received_at or self.clock.now(),
        )
        incident_id = await service.receive_report(dispatch=self.dispatch, report=event)
        assert incident_id is not None
        return incident_id

    async def tick(self, seconds: float) -> int:
        """Let time pass and fire whatever fell due."""
        self.clock.advance(seconds)
        return await fire_due_timers(dispatch=self.dispatch, now=self.clock.now())

    async def events(self, *types: type[Event]) -> list[Event]:
        """Every event staged in the outbox so far (of ``types``, if given), in order."""
        async with self.dispatch.sessions() as s:
            conn = await s.connection()
            rows = (await conn.execute(select(OUTBOX.c.value).order_by(OUTBOX.c.id))).all()
        events = [Envelope.model_validate_json(r[0]).event() for r in rows]
        return [e for e in events if not types or isinstance(e, types)]

    async def deliver_availability(self) -> None:
        """Apply the staged AvailabilityChanged events to the locator, as its consumer would."""
        for event in await self.events(AvailabilityChanged):
            assert isinstance(event, AvailabilityChanged)
            assert event.incident_id is not None
            self.locator.set_availability(event.responder_id, event.status, event.incident_id)

    async def detail(self, incident_id: uuid.UUID) -> Any:
        """The incident as the console sees it."""
        return await service.get_incident(dispatch=self.dispatch, incident_id=incident_id)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value (0 if absent)."""
        value = self.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def engine_at(
    path: Path,
    *,
    clock: FakeClock | None = None,
    locator: MemoryLocator | None = None,
    **overrides: Any,
) -> AsyncIterator[Engine]:
    """An engine on the SQLite file at ``path`` (fresh, or left by an earlier engine).

    A ``database_url`` override puts it on PostgreSQL instead, in the ``dispatch`` schema.
    """
    settings = DispatchSettings.model_validate(
        {
            "auth_secret": AUTH_SECRET,
            "database_url": f"sqlite+aiosqlite:///{path}",
            "gauge_refresh_s": 0,  # the gauges follow each change at once
        }
        | overrides
    )
    sqlite = db.is_sqlite(settings.database_url)
    schema = None if sqlite else settings.schema_name
    engine = db.create_engine(settings.database_url, schema=schema)
    await db.create_schema(engine, DispatchTable.metadata, schema=schema)
    registry = CollectorRegistry()
    clock = clock or FakeClock()
    locator = locator or MemoryLocator()
    feed = MemoryQueueFeed()
    dispatch = Dispatch(
        settings=settings,
        sessions=db.session_factory(engine),
        locator=locator,
        clock=clock,
        plans=default_plans(),
        grids=GridIndex.load(None),
        metrics=DispatchMetrics(registry),
        feed=feed,
        sqlite=sqlite,
    )
    try:
        yield Engine(dispatch, clock, locator, feed, registry)
    finally:
        await engine.dispose()
