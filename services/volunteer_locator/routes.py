"""Volunteer-locator's HTTP routes: thin, they call the service functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.volunteer_locator import claims, service
from services.volunteer_locator.available import AvailableResponders, available
from services.volunteer_locator.context import Locator
from services.volunteer_locator.geo import Point
from services.volunteer_locator.models import (
    MAP_DEFAULT_LIMIT,
    MAP_MAX_LIMIT,
    DutyUpdate,
    NearestResponder,
    PingBatch,
    PingIn,
    PingsAccepted,
    ResponderCreate,
    ResponderCreated,
    ResponderOnMap,
    ResponderPublic,
    ResponderRevocation,
    ResponderToken,
    ResponderUpdate,
)
from shared.auth import (
    RESPONDER_AUDIENCE,
    CurrentPrincipal,
    Principal,
    Role,
    mint_token,
    require_roles,
    require_self_or,
)
from shared.claims import (
    ClaimGranted,
    ClaimRequest,
    Latitude,
    Longitude,
    ReleaseRequest,
    ReleaseResult,
)
from shared.errors import AUTHENTICATED as AUTH
from shared.errors import Invalid, error_responses
from shared.http import self_contained_schema
from shared.responders import KINDS, Availability
from shared.revocations import Revocations

router = APIRouter(prefix="/v1", tags=["responders"])


async def get_locator(request: Request) -> Locator:
    """The locator's context, built in ``create_app``."""
    locator: Locator = request.app.state.locator
    return locator


async def get_revocations(request: Request) -> Revocations:
    """The responders this locator has revoked."""
    revocations: Revocations = request.app.state.revocations
    return revocations


LocatorDep = Annotated[Locator, Depends(get_locator)]
RevocationsDep = Annotated[Revocations, Depends(get_revocations)]
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]
ServiceCaller = Annotated[Principal, Depends(require_roles(Role.SERVICE))]
DispatchOrOperator = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.OPERATOR))]
DispatchOrService = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.SERVICE))]

_TEAM_ERRORS = error_responses(
    *AUTH, 404, notes={403: "Only a dispatcher may do this", 404: "No such responder"}
)

# A revoked responder's next token must be newer than the revocation, however close.
_AFTER_REVOCATION_S = 0.002


def responder_token(locator: Locator, responder_id: uuid.UUID, revoked_at: float | None) -> str:
    """A responder app token, issued after the responder's last revocation."""
    issued_at = datetime.now(UTC)
    if revoked_at is not None and issued_at.timestamp() <= revoked_at + _AFTER_REVOCATION_S:
        issued_at = datetime.fromtimestamp(revoked_at + _AFTER_REVOCATION_S, tz=UTC)
    return mint_token(
        secret=locator.settings.auth_secret.get_secret_value(),
        role=Role.RESPONDER,
        subject=str(responder_id),
        ttl=timedelta(seconds=locator.settings.responder_token_ttl_s),
        audience=RESPONDER_AUDIENCE,
        issued_at=issued_at,
    )


def _split(values: list[str] | None) -> list[str]:
    """Query lists may come repeated (``kinds=a&kinds=b``) or comma-separated (``kinds=a,b``)."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


@router.post(
    "/responders",
    status_code=201,
    response_model=ResponderCreated,
    responses=error_responses(*AUTH, 413, 422),
)
async def register_responder(
    body: ResponderCreate, _: Dispatcher, locator: LocatorDep
) -> ResponderCreated:
    """Register a responder (off duty until they say otherwise); answers with their app token."""
    responder = await service.register_responder(
        work=locator.work, index=locator.index, body=body, now=locator.clock.now()
    )
    token = responder_token(locator, responder.id, revoked_at=None)
    return ResponderCreated(responder_id=responder.id, token=token)


@router.patch(
    "/responders/{responder_id}",
    response_model=ResponderPublic,
    responses={
        **_TEAM_ERRORS,
        **error_responses(413),
        422: {"description": "A field is invalid or cannot be cleared"},
    },
)
async def update_responder(
    responder_id: uuid.UUID,
    body: ResponderUpdate,
    _: Dispatcher,
    locator: LocatorDep,
) -> ResponderPublic:
    """Edit a responder's name, skills, travel mode, office, grid or phone (a dispatcher)."""
    await service.update_responder(
        work=locator.work,
        index=locator.index,
        responder_id=responder_id,
        body=body,
        now=locator.clock.now(),
    )
    return await service.get_responder(
        sessions=locator.sessions, index=locator.index, responder_id=responder_id
    )


@router.post(
    "/responders/{responder_id}/revoke",
    response_model=ResponderRevocation,
    responses=_TEAM_ERRORS,
)
async def revoke_responder(
    responder_id: uuid.UUID,
    _: Dispatcher,
    locator: LocatorDep,
    revocations: RevocationsDep,
) -> ResponderRevocation:
    """Revoke a responder (a lost phone, a member who left): every token issued so far is
    refused by every service within a second, the responder goes off duty and out of the
    index, and dispatch withdraws and re-offers any pending offer. A new token can be had
    from ``POST /v1/responders/{id}/token``."""
    revoked_at = datetime.now(UTC)
    await service.revoke_responder(
        work=locator.work,
        index=locator.index,
        responder_id=responder_id,
        revoked_at=revoked_at,
        now=locator.clock.now(),
    )
    # This service refuses the old tokens at once; the others when the event reaches them.
    await revocations.record(str(responder_id), revoked_at.timestamp())
    return ResponderRevocation(responder_id=responder_id, revoked_at=revoked_at, on_duty=False)


@router.post(
    "/responders/{responder_id}/token",
    response_model=ResponderToken,
    responses=_TEAM_ERRORS,
)
async def issue_token(
    responder_id: uuid.UUID,
    _: Dispatcher,
    locator: LocatorDep,
    revocations: RevocationsDep,
) -> ResponderToken:
    """A fresh token for a registered responder, newer than any revocation of theirs."""
    await service.get_responder(
        sessions=locator.sessions, index=locator.index, responder_id=responder_id
    )  # 404 for an unknown responder
    token = responder_token(
        locator, responder_id, revoked_at=revocations.revoked_at(str(responder_id))
    )
    return ResponderToken(responder_id=responder_id, token=token)


@router.get(
    "/responders", response_model=list[ResponderOnMap], responses=error_responses(*AUTH, 422)
)
async def list_responders(
    _: DispatchOrOperator,
    locator: LocatorDep,
    revocations: RevocationsDep,
    on_duty: Annotated[bool | None, Query()] = None,
    kinds: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAP_MAX_LIMIT)] = MAP_DEFAULT_LIMIT,
) -> list[ResponderOnMap]:
    """Responders with their status and newest position, for the console's map (capped)."""
    wanted = _split(kinds)
    statuses = _split(status)
    unknown = sorted(set(wanted) - set(KINDS))
    if unknown:
        raise Invalid("unknown kinds", details={"kinds": unknown})
    bad = sorted(set(statuses) - {a.value for a in Availability})
    if bad:
        raise Invalid("unknown statuses", details={"status": bad})
    found = await service.responders_on_map(
        sessions=locator.sessions,
        index=locator.index,
        on_duty=on_duty,
        kinds=wanted,
        statuses=statuses,
        limit=limit,
    )
    return [_with_revocation(r, revocations) for r in found]


def _with_revocation(responder: ResponderOnMap, revocations: Revocations) -> ResponderOnMap:
    revoked_at = revocations.revoked_at(str(responder.responder_id))
    if revoked_at is None:
        return responder
    return responder.model_copy(update={"revoked_at": datetime.fromtimestamp(revoked_at, tz=UTC)})


@router.get(
    "/responders/nearest",
    response_model=list[NearestResponder],
    responses=error_responses(*AUTH, 422),
)
async def nearest_responders(
    _: DispatchOrService,
    locator: LocatorDep,
    lat: Annotated[Latitude, Query()],
    lon: Annotated[Longitude, Query()],
    kinds: Annotated[list[str] | None, Query()] = None,
    skills: Annotated[list[str] | None, Query()] = None,
    exclude: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[NearestResponder]:
    """The eligible free responders with the smallest ETA, nearest first."""
    wanted = _split(kinds)
    unknown = sorted(set(wanted) - set(KINDS))
    if unknown:
        raise Invalid("unknown kinds", details={"kinds": unknown})
    return await service.nearest(
        locator=locator,
        origin=Point(lat=lat, lon=lon),
        kinds=wanted,
        skills=_split(skills),
        exclude=_split(exclude),
        limit=limit,
    )


@router.get(
    "/responders/available",
    response_model=AvailableResponders,
    responses=error_responses(*AUTH),
)
async def available_responders(
    _: Annotated[Principal, Depends(require_roles(Role.SERVICE, Role.DISPATCHER, Role.OPERATOR))],
    locator: LocatorDep,
) -> AvailableResponders:
    """Every responder a search could return now, grouped by kind, travel mode and skills,
    with the travel mode's speed and positions only (dispatch's coverage map)."""
    return await available(index=locator.index, eta=locator.eta, now=locator.clock.now())


@router.get(
    "/responders/{responder_id}",
    response_model=ResponderPublic,
    responses=error_responses(*AUTH, 404, 422),
)
async def get_responder(
    responder_id: uuid.UUID, principal: CurrentPrincipal, locator: LocatorDep
) -> ResponderPublic:
    """A responder's registration, duty, status and newest position."""
    require_self_or(
        principal, role=Role.RESPONDER, subject=str(responder_id), others=(Role.DISPATCHER,)
    )
    return await service.get_responder(
        sessions=locator.sessions, index=locator.index, responder_id=responder_id
    )


@router.put(
    "/responders/{responder_id}/duty",
    response_model=ResponderPublic,
    responses=error_responses(*AUTH, 404, 413, 422),
)
async def set_duty(
    responder_id: uuid.UUID,
    body: DutyUpdate,
    principal: CurrentPrincipal,
    locator: LocatorDep,
) -> ResponderPublic:
    """Go on or off duty (the responder, or a dispatcher for them)."""
    require_self_or(
        principal, role=Role.RESPONDER, subject=str(responder_id), others=(Role.DISPATCHER,)
    )
    await service.set_duty(
        work=locator.work,
        index=locator.index,
        responder_id=responder_id,
        on_duty=body.on_duty,
        now=locator.clock.now(),
    )
    return await service.get_responder(
        sessions=locator.sessions, index=locator.index, responder_id=responder_id
    )


@router.post(
    "/responders/{responder_id}/location",
    status_code=202,
    response_model=PingsAccepted,
    responses=error_responses(*AUTH, 413, 422, 503),
)
async def post_location(
    responder_id: uuid.UUID,
    body: PingIn,
    principal: CurrentPrincipal,
    locator: LocatorDep,
) -> PingsAccepted:
    """A responder's own GPS ping; nobody may post another's position."""
    require_self_or(principal, role=Role.RESPONDER, subject=str(responder_id), others=())
    accepted = await service.report_locations(
        publisher=locator.publisher, pings=[(responder_id, body)], now=locator.clock.now()
    )
    return PingsAccepted(accepted=accepted)


@router.post(
    "/locations/batch",
    status_code=202,
    response_model=PingsAccepted,
    responses=error_responses(*AUTH, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": self_contained_schema(PingBatch)}},
        }
    },
)
async def post_location_batch(
    request: Request, _: ServiceCaller, locator: LocatorDep
) -> PingsAccepted:
    """Up to 1,000 pings from a gateway, each naming its responder."""
    # Validated straight from the bytes in one pass (pydantic's JSON parser), not via
    # json.loads and then the model: the batch endpoint carries 20,000 pings a second.
    try:
        body = PingBatch.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    accepted = await service.report_locations(
        publisher=locator.publisher, pings=service.batch_pairs(body.pings), now=locator.clock.now()
    )
    return PingsAccepted(accepted=accepted)


@router.post(
    "/claims",
    response_model=ClaimGranted,
    tags=["claims"],
    responses=error_responses(*AUTH, 404, 409, 413, 422, notes={404: "Nobody eligible is free"}),
)
async def claim(body: ClaimRequest, _: ServiceCaller, locator: LocatorDep) -> ClaimGranted:
    """Book the nearest eligible free responder (or the named one) for an incident.

    Service-to-service only (role ``service``); the hold is capped at ``CLAIM_HOLD_S``.
    """
    return await claims.claim(locator=locator, request=body)


@router.post(
    "/claims/release",
    response_model=ReleaseResult,
    tags=["claims"],
    responses=error_responses(*AUTH, 413, 422),
)
async def release(body: ReleaseRequest, _: ServiceCaller, locator: LocatorDep) -> ReleaseResult:
    """Return a responder to free if they are still held for that incident."""
    return await claims.release(locator=locator, request=body)
