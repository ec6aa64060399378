"""The engine's wiring and its unit of work: one transaction that saves state and stages
the events announcing it, then, once committed, kicks the outbox relay, records
metrics, wakes the timer loop and tells the live queue."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlmodel import col, delete, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.domain import ResponsePlan
from services.dispatch.feed import QueueFeed
from services.dispatch.grids import GridIndex
from services.dispatch.locator_client import Locator
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import OUTBOX, Incident, TimelineEntry, Timer
from services.dispatch.settings import DispatchSettings
from shared.clock import Clock, utc
from shared.db import SessionFactory
from shared.events import Envelope, Event, IncidentEvent
from shared.uow import UnitOfWork as SharedUnitOfWork
from shared.uow import UnitsOfWork

log = logging.getLogger(__name__)


def _noop() -> None:
    return None


def _noop_wake(_due_at: datetime) -> None:
    return None


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: uuid.UUID) -> AsyncIterator[None]:
        """Hold the key's lock for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class Dispatch:
    """Everything the engine's commands need, wired once in ``create_app`` (or a test)."""

    settings: DispatchSettings
    sessions: SessionFactory
    locator: Locator
    clock: Clock
    plans: Mapping[str, ResponsePlan]
    grids: GridIndex
    metrics: DispatchMetrics
    feed: QueueFeed
    sqlite: bool = True
    kick_relay: Callable[[], None] = _noop
    wake_timers: Callable[[datetime], None] = _noop_wake
    incident_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Reports are handled a partition at a time side by side; the check for an open
    # duplicate and the opening of a new incident must not interleave between them.
    opening_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def incident_lock(self, incident_id: uuid.UUID) -> AbstractAsyncContextManager[None]:
        """Serialise the work on one incident inside this instance (claims included)."""
        return self.incident_locks.hold(incident_id)

    async def refresh_gauges(self) -> None:
        """Open incidents and the age of the oldest."""
        async with self.sessions() as s:
            count, oldest = (
                await s.exec(
                    select(func.count(), func.min(Incident.received_at)).where(
                        col(Incident.status) == "open"
                    )
                )
            ).one()
        self.metrics.open_incidents.set(count or 0)
        if isinstance(oldest, str):  # min() skips the column type on SQLite
            oldest = datetime.fromisoformat(oldest)
        age = (self.clock.now() - utc(oldest)).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest_open_age.set(max(age, 0.0))

    def write_lock(self) -> AbstractAsyncContextManager[Any]:
        """SQLite allows one writer and reads outside a write see no locks, so in-process
        writes queue here; PostgreSQL relies on row locks (SELECT ... FOR UPDATE)."""
        return self._write_lock if self.sqlite else nullcontext()


class UnitOfWork(SharedUnitOfWork):
    """Dispatch's unit of work: staged incident events also go on the incident's timeline,
    and it keeps what the after-commit steps need (timers, touched incidents, gauges)."""

    def __init__(self, session: AsyncSession, *, outbox: Table, now: datetime) -> None:
        super().__init__(session, outbox=outbox, now=now)
        self.touched: set[uuid.UUID] = set()
        self.earliest_timer: datetime | None = None
        self.status_changed = False

    async def stage(
        self,
        event: Event,
        *,
        correlation_id: str | None = None,
        incident_id: uuid.UUID | None = None,
    ) -> Envelope:
        """Stage ``event`` in the outbox and, for incident events, on the timeline."""
        if incident_id is None:
            return await super().stage(event, correlation_id=correlation_id)
        envelope = await super().stage(event, correlation_id=correlation_id or str(incident_id))
        self.touched.add(incident_id)
        if isinstance(event, IncidentEvent):
            detail = event.model_dump(mode="json", exclude={"incident_id", "location"})
            self.session.add(
                TimelineEntry(
                    incident_id=incident_id,
                    at=self.now,
                    type=type(event).__name__,
                    detail=json.dumps(detail),
                )
            )
        return envelope

    def add_timer(self, *, kind: str, incident_id: uuid.UUID, ref: str, due_at: datetime) -> None:
        """Persist a deadline; the timer loop is woken after commit."""
        self.session.add(Timer(kind=kind, incident_id=incident_id, ref=ref, due_at=due_at))
        if self.earliest_timer is None or due_at < self.earliest_timer:
            self.earliest_timer = due_at

    async def drop_timers(
        self, *, incident_id: uuid.UUID, kind: str | None = None, ref: str | None = None
    ) -> None:
        """Delete an incident's timers (all, of one kind, or one)."""
        query = delete(Timer).where(col(Timer.incident_id) == incident_id)
        if kind is not None:
            query = query.where(col(Timer.kind) == kind)
        if ref is not None:
            query = query.where(col(Timer.ref) == ref)
        await self.session.exec(query)


@asynccontextmanager
async def unit_of_work(
    dispatch: Dispatch, *, now: datetime | None = None
) -> AsyncIterator[UnitOfWork]:
    """A transaction; after it commits, events go out and the live queue hears of it."""
    work = UnitsOfWork(dispatch.sessions, OUTBOX, dispatch.kick_relay)
    async with dispatch.write_lock(), work.open(UnitOfWork, now=now or dispatch.clock.now()) as uow:
        yield uow
    if uow.earliest_timer is not None:
        dispatch.wake_timers(uow.earliest_timer)
    if uow.status_changed:
        await dispatch.refresh_gauges()
    for incident_id in uow.touched:
        types = [
            type(e).__name__ for e in uow.events if getattr(e, "incident_id", None) == incident_id
        ]
        await dispatch.feed.publish({"incident_id": str(incident_id), "events": types})
