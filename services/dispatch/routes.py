"""Dispatch's HTTP routes: thin, they call the service functions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse

from services.dispatch import service
from services.dispatch.context import Dispatch
from services.dispatch.domain import IncidentStatus
from services.dispatch.models import (
    AssignRequest,
    IncidentDetail,
    IncidentPublic,
    MergeRequest,
    OfferPublic,
    UnitPublic,
    UnitStatusUpdate,
)
from shared.auth import CurrentPrincipal, Principal, Role, require_roles, require_self_or
from shared.errors import AUTHENTICATED as AUTH
from shared.errors import error_responses
from shared.streams import STREAM_RESPONSES, StreamLimiterDep, capped_stream

router = APIRouter(prefix="/v1", tags=["incidents"])


async def get_dispatch(request: Request) -> Dispatch:
    """The engine of this instance."""
    dispatch: Dispatch = request.app.state.dispatch
    return dispatch


DispatchDep = Annotated[Dispatch, Depends(get_dispatch)]
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]
Responder = Annotated[Principal, Depends(require_roles(Role.RESPONDER))]
StreamingDispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, stream=True))]


@router.get(
    "/incidents", response_model=list[IncidentPublic], responses=error_responses(*AUTH, 422)
)
async def get_incidents(
    dispatch: DispatchDep, _: Dispatcher, status: IncidentStatus | None = None
) -> list[IncidentPublic]:
    """The live queue (``status=open``), most urgent first."""
    return await service.list_incidents(dispatch=dispatch, status=status)


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    responses=error_responses(*AUTH, 404, 422),
)
async def get_incident(
    incident_id: uuid.UUID, dispatch: DispatchDep, _: Dispatcher
) -> IncidentDetail:
    """One incident with its reports, offers, units, timeline and milestones."""
    return await service.get_incident(dispatch=dispatch, incident_id=incident_id)


@router.get(
    "/queue/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **error_responses(*AUTH),
        **STREAM_RESPONSES,
    },
)
async def queue_stream(
    dispatch: DispatchDep, who: StreamingDispatcher, streams: StreamLimiterDep
) -> EventSourceResponse:
    """Live queue changes: the queue first, then every change as it commits.

    Takes ``?access_token=`` for EventSource; 429 beyond ``MAX_STREAMS_PER_CALLER``.
    """

    async def events() -> AsyncIterator[dict[str, Any]]:
        async with dispatch.feed.follow() as changes:
            queue = await service.list_incidents(dispatch=dispatch, status="open")
            yield {
                "event": "queue",
                "data": json.dumps([i.model_dump(mode="json") for i in queue]),
            }
            async for change in changes:
                yield {"event": "incident", "data": json.dumps(change)}

    return capped_stream(streams, who, events(), ping=15)


@router.post(
    "/offers/{offer_id}/accept",
    response_model=OfferPublic,
    responses=error_responses(*AUTH, 404, 409, 422),
)
async def accept_offer(offer_id: uuid.UUID, dispatch: DispatchDep, who: Responder) -> OfferPublic:
    """The offered responder accepts."""
    offer = await service.accept_offer(
        dispatch=dispatch, offer_id=offer_id, responder_id=who.subject
    )
    return service.offer_public(offer)


@router.post(
    "/offers/{offer_id}/decline",
    response_model=OfferPublic,
    responses=error_responses(*AUTH, 404, 409, 422),
)
async def decline_offer(offer_id: uuid.UUID, dispatch: DispatchDep, who: Responder) -> OfferPublic:
    """The offered responder declines."""
    offer = await service.decline_offer(
        dispatch=dispatch, offer_id=offer_id, responder_id=who.subject
    )
    return service.offer_public(offer)


@router.post(
    "/incidents/{incident_id}/units/{responder_id}/status",
    response_model=UnitPublic,
    responses=error_responses(*AUTH, 404, 409, 413, 422),
)
async def set_unit_status(
    incident_id: uuid.UUID,
    responder_id: uuid.UUID,
    body: UnitStatusUpdate,
    dispatch: DispatchDep,
    who: CurrentPrincipal,
) -> UnitPublic:
    """That responder, or a dispatcher, reports en route, on scene or cleared."""
    require_self_or(who, role=Role.RESPONDER, subject=str(responder_id), others=[Role.DISPATCHER])
    unit = await service.set_unit_status(
        dispatch=dispatch, incident_id=incident_id, responder_id=responder_id, status=body.status
    )
    return service.unit_public(unit)


@router.post(
    "/incidents/{incident_id}/assign",
    response_model=UnitPublic,
    responses=error_responses(*AUTH, 404, 409, 413, 422, 503),
)
async def assign(
    incident_id: uuid.UUID, body: AssignRequest, dispatch: DispatchDep, _: Dispatcher
) -> UnitPublic:
    """Assign a responder, or the next nearest when none is named."""
    unit = await service.assign(
        dispatch=dispatch, incident_id=incident_id, responder_id=body.responder_id
    )
    return service.unit_public(unit)


@router.post(
    "/incidents/{incident_id}/resolve",
    response_model=IncidentDetail,
    responses=error_responses(*AUTH, 404, 409, 422),
)
async def resolve(incident_id: uuid.UUID, dispatch: DispatchDep, _: Dispatcher) -> IncidentDetail:
    """Close as dealt with."""
    await service.resolve(dispatch=dispatch, incident_id=incident_id)
    return await service.get_incident(dispatch=dispatch, incident_id=incident_id)


@router.post(
    "/incidents/{incident_id}/cancel",
    response_model=IncidentDetail,
    responses=error_responses(*AUTH, 404, 409, 422),
)
async def cancel(incident_id: uuid.UUID, dispatch: DispatchDep, _: Dispatcher) -> IncidentDetail:
    """Close without a response."""
    await service.cancel(dispatch=dispatch, incident_id=incident_id)
    return await service.get_incident(dispatch=dispatch, incident_id=incident_id)


@router.post(
    "/incidents/{incident_id}/merge",
    response_model=IncidentDetail,
    responses=error_responses(*AUTH, 404, 409, 413, 422),
)
async def merge(
    incident_id: uuid.UUID, body: MergeRequest, dispatch: DispatchDep, _: Dispatcher
) -> IncidentDetail:
    """Merge into another incident; answers with the incident merged into."""
    await service.merge(dispatch=dispatch, incident_id=incident_id, into=body.into)
    return await service.get_incident(dispatch=dispatch, incident_id=body.into)
