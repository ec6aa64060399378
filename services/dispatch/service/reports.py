"""Reports: opening an incident for a report or joining it to an open duplicate, and
withdrawn reports."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OpenIncidentView,
    find_duplicate,
    tightened,
)
from services.dispatch.merge_locks import lock_neighbourhood
from services.dispatch.metrics import grid_label
from services.dispatch.models import (
    Incident,
    IncidentReport,
    Milestone,
)
from services.dispatch.plans import plan_for, slots_to_json
from services.dispatch.service.closing import close_incident
from services.dispatch.service.common import TARGET_TIMER, incident_for_update
from services.dispatch.service.offers import fill_incident
from services.dispatch.uow import UnitOfWork, unit_of_work
from shared.events import (
    IncidentOpened,
    ReportCancelled,
    ReportMerged,
    ReportReceived,
    StageTarget,
)


async def receive_report(*, dispatch: Dispatch, report: ReportReceived) -> uuid.UUID | None:
    """Open an incident for a report, or join it to an open duplicate; then make offers.

    Returns the incident id, or None for a report already handled.
    """
    settings = dispatch.settings
    opened: uuid.UUID | None = None
    async with dispatch.opening_lock, unit_of_work(dispatch) as uow:
        s = uow.session
        if not dispatch.sqlite:
            # Other dispatch instances open incidents too: meet them on the same cells.
            await lock_neighbourhood(
                s,
                category=report.category,
                lat=report.location.lat,
                lon=report.location.lon,
                radius_m=settings.duplicate_radius_m,
            )
        if await s.get(IncidentReport, report.report_id) is not None:
            return None
        horizon = report.received_at - timedelta(seconds=settings.duplicate_window_s)
        candidates = (
            await s.exec(
                select(Incident)
                .where(col(Incident.status) == IncidentStatus.OPEN)
                .where(col(Incident.category) == report.category)
                .where(col(Incident.last_report_at) >= horizon)
            )
        ).all()
        duplicate = find_duplicate(
            (
                OpenIncidentView(str(i.id), i.category, i.lat, i.lon, i.last_report_at)
                for i in candidates
            ),
            category=report.category,
            lat=report.location.lat,
            lon=report.location.lon,
            received_at=report.received_at,
            radius_m=settings.duplicate_radius_m,
            window_s=settings.duplicate_window_s,
        )
        if duplicate is not None:
            incident = await incident_for_update(s, uuid.UUID(duplicate.incident_id))
            if incident is None:  # read under the opening lock a moment ago; rows are kept
                raise LookupError(f"incident {duplicate.incident_id} vanished")
            _link_report(s, incident, report)
            await uow.stage(
                ReportMerged(incident_id=incident.id, report_id=report.report_id),
                incident_id=incident.id,
            )
            category = incident.category
            uow.on_commit(lambda: dispatch.metrics.reports_merged.labels(category).inc())
            return incident.id
        incident = await _open(uow, dispatch, report)
        opened = incident.id
    await fill_incident(dispatch=dispatch, incident_id=opened)
    return opened


def _link_report(session: AsyncSession, incident: Incident, report: ReportReceived) -> None:
    session.add(
        IncidentReport(
            report_id=report.report_id,
            incident_id=incident.id,
            lat=report.location.lat,
            lon=report.location.lon,
            description=report.description,
            received_at=report.received_at,
        )
    )
    incident.last_report_at = max(incident.last_report_at, report.received_at)
    session.add(incident)


async def _open(uow: UnitOfWork, dispatch: Dispatch, report: ReportReceived) -> Incident:
    plan = plan_for(dispatch.plans, report.category)
    grid = dispatch.grids.locate(report.location.lat, report.location.lon)
    tier = grid.zone_tier if grid else None
    factor = dispatch.settings.zone_tier_factors.get(tier, 1.0) if tier else 1.0
    stages = tightened(plan.stages, factor=factor, overrides=dispatch.settings.target_overrides_s)
    incident = Incident(
        category=report.category,
        priority=plan.priority,
        lat=report.location.lat,
        lon=report.location.lon,
        address=report.address,
        grid=grid.grid if grid else None,
        office=grid.office if grid else None,
        zone_tier=tier,
        slots_json=slots_to_json(plan),
        first_report_id=report.report_id,
        received_at=report.received_at,
        last_report_at=report.received_at,
    )
    s = uow.session
    s.add(incident)
    await s.flush()
    _link_report(s, incident, report)
    for position, spec in enumerate(stages):
        due_at = report.received_at + timedelta(seconds=spec.target_s)
        s.add(
            Milestone(
                incident_id=incident.id,
                stage=spec.stage,
                position=position,
                label=spec.label,
                kind=spec.kind,
                target_s=spec.target_s,
                due_at=due_at,
            )
        )
        uow.add_timer(kind=TARGET_TIMER, incident_id=incident.id, ref=spec.stage, due_at=due_at)
    await uow.stage(
        IncidentOpened(
            incident_id=incident.id,
            report_id=report.report_id,
            category=report.category,
            priority=plan.priority,
            location=report.location,
            address=report.address,
            grid=incident.grid,
            office=incident.office,
            zone_tier=tier,
            received_at=report.received_at,
            targets=tuple(
                StageTarget(stage=s.stage, label=s.label, target_s=s.target_s) for s in stages
            ),
        ),
        incident_id=incident.id,
    )
    uow.status_changed = True
    labels = (incident.category, grid_label(incident.grid))
    uow.on_commit(lambda: dispatch.metrics.incidents_opened.labels(*labels).inc())
    return incident


async def cancel_report(*, dispatch: Dispatch, event: ReportCancelled) -> None:
    """A reporter withdrew a report; the incident closes once all its reports are withdrawn."""
    async with dispatch.sessions() as s:
        link = await s.get(IncidentReport, event.report_id)
    if link is None:
        return
    async with dispatch.incident_lock(link.incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await incident_for_update(s, link.incident_id)
        link = await s.get(IncidentReport, event.report_id)
        if incident is None or link is None:
            return
        if link.cancelled_at is None:
            link.cancelled_at = event.cancelled_at
            s.add(link)
        reports = (
            await s.exec(
                select(IncidentReport).where(col(IncidentReport.incident_id) == incident.id)
            )
        ).all()
        if incident.status == IncidentStatus.OPEN and all(
            r.cancelled_at is not None for r in reports
        ):
            await close_incident(
                uow, dispatch, incident, IncidentStatus.CANCELLED, reason=event.reason
            )
