"""Intake's commands: plain functions with keyword arguments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table

from services.intake.models import Report, ReportCreate
from shared.db import SessionFactory, transaction
from shared.errors import ApiError
from shared.events import GeoPoint, ReportReceived
from shared.outbox import stage


async def receive_report(
    *,
    sessions: SessionFactory,
    outbox: Table,
    body: ReportCreate,
    categories: list[str],
    now: datetime,
) -> Report:
    """Save a report and stage its ReportReceived in the same transaction."""
    if body.category not in categories:
        raise ApiError(
            422,
            "unknown_category",
            f"category must be one of: {', '.join(categories)}",
            {"field": "category", "allowed": categories},
        )
    reporter = body.reporter
    report = Report(
        category=body.category,
        lat=body.location.lat,
        lon=body.location.lon,
        accuracy_m=body.location.accuracy_m,
        description=body.description,
        address=body.address,
        reporter_name=reporter.name if reporter else None,
        reporter_phone=reporter.phone if reporter else None,
        device_id=reporter.device_id if reporter else None,
        received_at=now,
    )
    async with transaction(sessions) as session:
        session.add(report)
        await stage(
            session,
            outbox,
            ReportReceived(
                report_id=report.id,
                category=report.category,
                location=GeoPoint(lat=report.lat, lon=report.lon, accuracy_m=report.accuracy_m),
                description=report.description,
                address=report.address,
                received_at=now,
            ),
            occurred_at=now,
        )
    return report
