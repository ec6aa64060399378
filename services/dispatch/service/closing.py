"""Closing an incident: resolve, cancel and merge; nobody stays booked to a closed incident."""

from __future__ import annotations

import uuid

from sqlmodel import col, select

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OfferStatus,
    UnitState,
)
from services.dispatch.models import (
    Incident,
    IncidentReport,
    Offer,
    Unit,
)
from services.dispatch.service.common import free_responder, incident_for_update, require_open
from services.dispatch.service.offers import withdraw
from services.dispatch.uow import UnitOfWork, unit_of_work
from shared.errors import Invalid
from shared.events import (
    IncidentCancelled,
    IncidentResolved,
    ReportMerged,
    UnitStatusChanged,
)


async def _release_all(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, reason: str
) -> None:
    """Withdraw open offers and clear every unit: nobody stays booked to a closed incident."""
    s = uow.session
    offers = (
        await s.exec(
            select(Offer)
            .where(col(Offer.incident_id) == incident.id)
            .where(col(Offer.status) == OfferStatus.PENDING)
        )
    ).all()
    for offer in offers:
        await withdraw(uow, dispatch, incident, offer, reason=reason)
    units = (
        await s.exec(
            select(Unit)
            .where(col(Unit.incident_id) == incident.id)
            .where(col(Unit.status) != UnitState.CLEARED)
        )
    ).all()
    for unit in units:
        unit.status, unit.cleared_at = UnitState.CLEARED, uow.now
        s.add(unit)
        await uow.stage(
            UnitStatusChanged(
                incident_id=incident.id,
                responder_id=unit.responder_id,
                kind=unit.kind,
                status="cleared",
            ),
            incident_id=incident.id,
        )
        await free_responder(uow, unit.responder_id, incident.id)
    await uow.drop_timers(incident_id=incident.id)


async def close_incident(
    uow: UnitOfWork,
    dispatch: Dispatch,
    incident: Incident,
    status: IncidentStatus,
    *,
    reason: str,
    merged_into: uuid.UUID | None = None,
) -> None:
    await _release_all(uow, dispatch, incident, reason)
    incident.status, incident.closed_at, incident.merged_into = status, uow.now, merged_into
    uow.session.add(incident)
    uow.status_changed = True
    if status == IncidentStatus.RESOLVED:
        event: IncidentResolved | IncidentCancelled = IncidentResolved(
            incident_id=incident.id, resolved_at=uow.now
        )
    else:
        event = IncidentCancelled(
            incident_id=incident.id, cancelled_at=uow.now, reason=reason, merged_into=merged_into
        )
    await uow.stage(event, incident_id=incident.id)


async def resolve(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """A dispatcher closes the incident as dealt with; every unit and claim is freed."""
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        incident = require_open(await incident_for_update(uow.session, incident_id))
        await close_incident(uow, dispatch, incident, IncidentStatus.RESOLVED, reason="resolved")


async def cancel(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """A dispatcher cancels the incident; every unit and claim is freed."""
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        incident = require_open(await incident_for_update(uow.session, incident_id))
        await close_incident(
            uow, dispatch, incident, IncidentStatus.CANCELLED, reason="dispatcher_cancelled"
        )


async def merge(*, dispatch: Dispatch, incident_id: uuid.UUID, into: uuid.UUID) -> None:
    """Merge an incident into another: its reports move, its units and claims are freed."""
    if incident_id == into:
        raise Invalid("an incident cannot be merged into itself")
    first, second = sorted((incident_id, into))
    async with (
        dispatch.incident_lock(first),
        dispatch.incident_lock(second),
        unit_of_work(dispatch) as uow,
    ):
        s = uow.session
        source = require_open(await incident_for_update(s, incident_id))
        target = require_open(await incident_for_update(s, into))
        reports = (
            await s.exec(select(IncidentReport).where(col(IncidentReport.incident_id) == source.id))
        ).all()
        await close_incident(
            uow, dispatch, source, IncidentStatus.MERGED, reason="merged", merged_into=into
        )
        for report in reports:
            report.incident_id = target.id
            s.add(report)
            target.last_report_at = max(target.last_report_at, report.received_at)
            await uow.stage(
                ReportMerged(
                    incident_id=target.id, report_id=report.report_id, from_incident_id=source.id
                ),
                incident_id=target.id,
            )
        s.add(target)
