"""Dispatch's unit of work: the shared one (state and the events announcing it in one
transaction, after-commit actions, the relay woken) plus the incident timeline, persisted
timers, the gauges and the live queue."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import Table
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.models import OUTBOX, TimelineEntry, Timer
from shared.events import Envelope, Event, IncidentEvent
from shared.uow import UnitOfWork as SharedUnitOfWork
from shared.uow import UnitsOfWork

log = logging.getLogger(__name__)


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
        await dispatch.gauges_changed()
    for incident_id in uow.touched:
        types = [
            type(e).__name__ for e in uow.events if getattr(e, "incident_id", None) == incident_id
        ]
        await dispatch.feed.publish({"incident_id": str(incident_id), "events": types})
