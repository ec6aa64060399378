"""Bookings: dispatch's truth about who is booked, restated to the locator.

Dispatch's pending offers and active units are the truth; the locator's Redis index is
a cache of it that can drift (Redis came back empty, an event was lost). Dispatch
restates the truth through its outbox, never by touching the locator's keys:

- every booked responder as ``AvailabilityChanged busy`` for their incident, staged
  under that incident's row lock, so a ``free`` staged for the same incident is never
  published before it;
- then one ``BookingsReconciled`` listing them all, so the locator lets a hold on anyone
  else lapse after a grace period (drift is fixed in the direction that cannot book
  anyone twice: restating busy at once, freeing only after the grace).

It runs at startup, every ``reconcile_interval_s``, when the locator asks
(``BookingsResyncRequested``), and for one responder when a claim hands dispatch
someone it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.domain import OfferStatus, UnitState
from services.dispatch.models import Offer, Unit
from services.dispatch.service.common import incident_for_update
from services.dispatch.uow import unit_of_work
from shared.events import AvailabilityChanged, BookingsReconciled
from shared.tasks import cancel, wait_until_set

log = logging.getLogger(__name__)


async def bookings_of(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID | None = None,
    responder_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(responder, incident) for every pending offer and active unit, optionally narrowed."""
    offers = select(Offer.responder_id, Offer.incident_id).where(
        col(Offer.status) == OfferStatus.PENDING
    )
    units = select(Unit.responder_id, Unit.incident_id).where(col(Unit.status) != UnitState.CLEARED)
    if incident_id is not None:
        offers = offers.where(col(Offer.incident_id) == incident_id)
        units = units.where(col(Unit.incident_id) == incident_id)
    if responder_id is not None:
        offers = offers.where(col(Offer.responder_id) == responder_id)
        units = units.where(col(Unit.responder_id) == responder_id)
    rows = [*(await session.exec(offers)).all(), *(await session.exec(units)).all()]
    return sorted({(r, i) for r, i in rows})


async def restate_incident(*, dispatch: Dispatch, incident_id: uuid.UUID) -> list[uuid.UUID]:
    """Stage ``busy`` for everyone booked on one incident, under its row lock."""
    async with unit_of_work(dispatch) as uow:
        if await incident_for_update(uow.session, incident_id) is None:
            return []
        booked = await bookings_of(uow.session, incident_id=incident_id)
        for responder_id, _ in booked:
            await uow.stage(
                AvailabilityChanged(
                    responder_id=responder_id, status="busy", incident_id=incident_id
                ),
                incident_id=incident_id,
            )
    return [r for r, _ in booked]


async def resync_responder(*, dispatch: Dispatch, responder_id: uuid.UUID) -> int:
    """Restate one responder's bookings (the locator offered someone dispatch holds)."""
    async with dispatch.sessions() as s:
        incidents = {i for _, i in await bookings_of(s, responder_id=responder_id)}
    for incident_id in sorted(incidents):
        await restate_incident(dispatch=dispatch, incident_id=incident_id)
    dispatch.metrics.booking_resyncs.labels("responder").inc()
    return len(incidents)


async def reconcile_bookings(*, dispatch: Dispatch, reason: str) -> int:
    """Restate every booking, then the list of everyone booked; returns how many."""
    async with dispatch.sessions() as s:
        incidents = sorted({i for _, i in await bookings_of(s)})
    booked: set[uuid.UUID] = set()
    for incident_id in incidents:
        booked.update(await restate_incident(dispatch=dispatch, incident_id=incident_id))
    settings = dispatch.settings
    async with unit_of_work(dispatch) as uow:
        await uow.stage(
            BookingsReconciled(
                taken_at=uow.now,
                responder_ids=tuple(sorted(booked)),
                grace_s=settings.reconcile_grace_s,
            )
        )
    dispatch.metrics.booking_resyncs.labels(reason).inc()
    log.info("bookings restated to the locator (%s): %d responders", reason, len(booked))
    return len(booked)


class Reconciler:
    """Runs :func:`reconcile_bookings` at start, periodically and when asked."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._asked = asyncio.Event()
        self._reason = "startup"

    def request(self, reason: str) -> None:
        """Reconcile as soon as possible (the locator asked)."""
        self._reason = reason
        self._asked.set()

    async def run(self) -> None:
        """Reconcile now, then every interval or when asked, until cancelled."""
        interval_s = self._dispatch.settings.reconcile_interval_s
        while True:
            reason, self._reason = self._reason, "periodic"
            self._asked.clear()
            try:
                await reconcile_bookings(dispatch=self._dispatch, reason=reason)
            except Exception:
                log.exception("reconciling bookings failed; retrying at the next interval")
            await wait_until_set(self._asked, interval_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reconciler]:
        """Run in the background for the block."""
        task = asyncio.create_task(self.run(), name="bookings-reconciler")
        try:
            yield self
        finally:
            await cancel(task)
