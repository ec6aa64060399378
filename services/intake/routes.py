"""Intake's HTTP routes: thin, they call the service functions."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.intake import service
from services.intake.models import OUTBOX, ReportAccepted, ReportCreate
from services.intake.settings import IntakeSettings
from shared.auth import Role, mint_token
from shared.deps import ClockDep, RuntimeDep

router = APIRouter(prefix="/v1", tags=["reports"])


def get_settings(request: Request) -> IntakeSettings:
    """Intake's settings."""
    settings: IntakeSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[IntakeSettings, Depends(get_settings)]


@router.post("/reports", status_code=202, response_model=ReportAccepted)
async def post_report(
    body: ReportCreate, runtime: RuntimeDep, settings: SettingsDep, clock: ClockDep
) -> ReportAccepted:
    """Take a citizen's report. No token needed; the answer carries the tracking token."""
    report = await service.receive_report(
        sessions=runtime.sessions,
        outbox=OUTBOX,
        body=body,
        categories=settings.categories,
        now=clock.now(),
    )
    if runtime.relay is not None:
        runtime.relay.kick()
    token = mint_token(
        secret=settings.auth_secret.get_secret_value(),
        role=Role.REPORTER,
        subject=str(report.id),
        ttl=timedelta(days=7),
    )
    return ReportAccepted(
        report_id=report.id,
        tracking_token=token,
        status=report.status,
        received_at=report.received_at,
    )
