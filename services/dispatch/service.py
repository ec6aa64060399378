"""Dispatch's commands and queries: plain functions with keyword arguments."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlmodel import col, select

from services.dispatch.models import Incident
from shared.db import SessionFactory, transaction
from shared.events import ReportReceived


async def open_incident(
    *, sessions: SessionFactory, outbox: Table, report: ReportReceived
) -> Incident | None:
    """Open an incident for a new report; a report already seen opens nothing."""
    del outbox  # IncidentOpened is staged here once the engine lands (dispatch issue).
    async with transaction(sessions) as session:
        existing = (
            await session.exec(
                select(Incident).where(col(Incident.first_report_id) == report.report_id)
            )
        ).first()
        if existing is not None:
            return None
        incident = Incident(
            category=report.category,
            lat=report.location.lat,
            lon=report.location.lon,
            address=report.address,
            first_report_id=report.report_id,
            received_at=report.received_at,
        )
        session.add(incident)
    return incident


async def list_incidents(*, sessions: SessionFactory, status: str | None) -> Sequence[Incident]:
    """The queue: oldest first until urgency ranking lands."""
    async with sessions() as session:
        query = select(Incident).order_by(col(Incident.received_at))
        if status is not None:
            query = query.where(col(Incident.status) == status)
        return (await session.exec(query)).all()
