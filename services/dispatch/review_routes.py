"""Review routes: an incident's full record (JSON or CSV) and the shift report."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.dispatch import service
from services.dispatch.coverage_routes import ErrorBody
from services.dispatch.models import IncidentDetail
from services.dispatch.review import (
    EXPORT_COLUMNS,
    SHIFT_COLUMNS,
    incident_rows,
    shift_report,
    shift_rows,
    to_csv,
)
from services.dispatch.routes import DispatchDep
from shared.auth import Principal, Role, require_roles
from shared.errors import Invalid

router = APIRouter(prefix="/v1", tags=["review"])
DispatchOrOperator = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.OPERATOR))]
Format = Literal["json", "csv"]
MAX_SHIFT = timedelta(days=31)
CSV_MEDIA = "text/csv; charset=utf-8"


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No token, or a bad one"},
    403: {"model": ErrorBody, "description": "Not a dispatcher or operator token"},
    422: {"model": ErrorBody, "description": "Bad query: unknown format, or a bad range"},
}
_CSV = {"content": {"text/csv": {"schema": {"type": "string"}}}}


class IncidentExport(BaseModel):
    """An incident's full record: reports, timeline, offers with their decision traces,
    units and milestones."""

    exported_at: datetime
    incident: IncidentDetail


class StageFigures(BaseModel):
    """One 1-3-5 stage over the shift."""

    stage: str
    met: int
    breached: int
    pending: int
    compliance: float | None = Field(description="met / (met + breached); null if none judged.")
    median_s: float | None
    p90_s: float | None


class CoveragePoint(BaseModel):
    """A kept coverage ratio (all zone tiers, weighted) at one refresh."""

    at: datetime
    stage: str
    zone_tier: str
    ratio: float


class ShiftReport(BaseModel):
    """A shift's figures for one office (or all) over a date range."""

    office: str | None
    from_: datetime = Field(alias="from")
    to: datetime
    incidents: int
    by_category: dict[str, int]
    stages: list[StageFigures]
    no_responder_episodes: int = Field(description="Red alarms: nobody was coming.")
    slot_unfilled_episodes: int = Field(
        description="Amber notices: a slot unfilled, a unit coming."
    )
    coverage: list[CoveragePoint]

    model_config = {"populate_by_name": True}


@router.get(
    "/incidents/{incident_id}/export",
    response_model=IncidentExport,
    responses={
        200: _CSV,
        **_AUTH_ERRORS,
        404: {"model": ErrorBody, "description": "No such incident"},
    },
)
async def export_incident(
    incident_id: uuid.UUID,
    dispatch: DispatchDep,
    _: DispatchOrOperator,
    format: Format = "json",
) -> Any:
    """The incident's full record as JSON, or as CSV: one row per report, timeline entry,
    offer, trace entry, unit and milestone, its kind in the ``record`` column. Text cells
    that a spreadsheet would run as a formula start with ``'``."""
    detail = await service.get_incident(dispatch=dispatch, incident_id=incident_id)
    if format == "csv":
        return Response(
            to_csv(EXPORT_COLUMNS, incident_rows(detail)),
            media_type=CSV_MEDIA,
            headers={"content-disposition": f'attachment; filename="incident-{incident_id}.csv"'},
        )
    return IncidentExport(exported_at=dispatch.clock.now(), incident=detail)


@router.get(
    "/shift-reports",
    response_model=ShiftReport,
    response_model_by_alias=True,
    responses={200: _CSV, **_AUTH_ERRORS},
)
async def get_shift_report(
    dispatch: DispatchDep,
    _: DispatchOrOperator,
    start: Annotated[datetime, Query(alias="from", description="Start, inclusive (ISO 8601).")],
    end: Annotated[datetime, Query(alias="to", description="End, exclusive (ISO 8601).")],
    office: Annotated[str | None, Query(max_length=64)] = None,
    format: Format = "json",
) -> Any:
    """Incidents received in the range (at most 31 days): counts by category, 1-3-5
    compliance with median and p90 seconds per stage, red and amber alarm episodes, and
    the coverage ratio over time (kept every ``COVERAGE_SAMPLE_INTERVAL_S``)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("from and to need a time zone")
    if not start < end or end - start > MAX_SHIFT:
        raise Invalid("from must precede to, at most 31 days apart")
    report = await shift_report(dispatch=dispatch, office=office, start=start, end=end)
    if format == "csv":
        return Response(
            to_csv(SHIFT_COLUMNS, shift_rows(report)),
            media_type=CSV_MEDIA,
            headers={"content-disposition": 'attachment; filename="shift-report.csv"'},
        )
    return ShiftReport.model_validate(report)
