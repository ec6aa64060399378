"""A responder's own recent incidents for the responder app:
``GET /v1/responders/{id}/incidents``.

Only what the responder worked: the incident's category, place and state, and their own
unit's status and times. Never another party's details.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import col, select

from services.dispatch.models import Incident, Unit
from services.dispatch.routes import DispatchDep
from shared.auth import CurrentPrincipal, Role, require_self_or
from shared.errors import error_responses

router = APIRouter(prefix="/v1", tags=["incidents"])


class ResponderIncident(BaseModel):
    """One incident the responder was a unit of, newest first."""

    incident_id: uuid.UUID
    category: str
    address: str | None
    lat: float
    lon: float
    incident_status: str
    unit_status: str
    assigned_at: datetime
    on_scene_at: datetime | None
    cleared_at: datetime | None


@router.get(
    "/responders/{responder_id}/incidents",
    response_model=list[ResponderIncident],
    responses=error_responses(401, 403, 422),
)
async def responder_incidents(
    responder_id: uuid.UUID,
    principal: CurrentPrincipal,
    dispatch: DispatchDep,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[ResponderIncident]:
    """The incidents this responder was assigned to, newest first (them, or a dispatcher)."""
    require_self_or(
        principal, role=Role.RESPONDER, subject=str(responder_id), others=(Role.DISPATCHER,)
    )
    async with dispatch.sessions() as s:
        rows = (
            await s.exec(
                select(Unit, Incident)
                .join(Incident, col(Incident.id) == col(Unit.incident_id))
                .where(col(Unit.responder_id) == responder_id)
                .order_by(col(Unit.assigned_at).desc())
                .limit(limit)
            )
        ).all()
    return [
        ResponderIncident(
            incident_id=incident.id,
            category=incident.category,
            address=incident.address,
            lat=incident.lat,
            lon=incident.lon,
            incident_status=incident.status,
            unit_status=unit.status,
            assigned_at=unit.assigned_at,
            on_scene_at=unit.on_scene_at,
            cleared_at=unit.cleared_at,
        )
        for unit, incident in rows
    ]
