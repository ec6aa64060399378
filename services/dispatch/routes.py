"""Dispatch's HTTP routes: thin, they call the service functions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from services.dispatch import service
from services.dispatch.models import IncidentPublic
from shared.auth import Principal, Role, require_roles
from shared.deps import RuntimeDep

router = APIRouter(prefix="/v1", tags=["incidents"])

Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]


@router.get("/incidents", response_model=list[IncidentPublic])
async def get_incidents(
    runtime: RuntimeDep, _: Dispatcher, status: str | None = None
) -> list[IncidentPublic]:
    """The live queue."""
    incidents = await service.list_incidents(sessions=runtime.sessions, status=status)
    return [
        IncidentPublic(
            incident_id=i.id,
            category=i.category,
            status=i.status,
            lat=i.lat,
            lon=i.lon,
            address=i.address,
            received_at=i.received_at,
        )
        for i in incidents
    ]
