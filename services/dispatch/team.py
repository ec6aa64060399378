"""The console's team page helpers under ``/console/api/team``: the locator's registry
routes, asked on the dispatcher's behalf with the dispatcher's own token, so the page talks
to one origin and the locator still sees (and checks) who is really asking.

Listing joins the locator's responders with dispatch's own knowledge of who is working
which incident. Every other helper passes the locator's answer through as it came,
status and error body included.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlmodel import col, select

from services.dispatch.context import Dispatch
from services.dispatch.domain import IncidentStatus
from services.dispatch.models import Incident, Unit
from services.dispatch.routes import DispatchDep
from shared.auth import Principal, Role, require_roles, token_from_request
from shared.errors import Invalid, NotFound, Unavailable

router = APIRouter(prefix="/console/api/team", tags=["console"], include_in_schema=False)
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class CurrentIncident(BaseModel):
    """The open incident a responder is working and their unit's status on it."""

    incident_id: uuid.UUID
    category: str
    unit_status: str


class TeamMember(BaseModel):
    """A responder as the team page lists them."""

    responder_id: uuid.UUID
    name: str
    kind: str
    skills: list[str]
    travel_mode: str
    office: str | None
    grid: str | None
    on_duty: bool
    status: str | None
    lat: float | None
    lon: float | None
    last_seen_at: datetime | None
    revoked_at: datetime | None = None
    incident: CurrentIncident | None


class TeamProxy:
    """Calls the locator's registry routes with the caller's bearer token."""

    def __init__(self, *, base_url: str, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def send(
        self, method: str, path: str, *, bearer: str, json: Any = None, params: Any = None
    ) -> httpx.Response:
        """One request to the locator; 503 when it cannot be reached."""
        try:
            return await self._client.request(
                method,
                path,
                json=json,
                params=params,
                headers={"authorization": f"Bearer {bearer}"},
            )
        except httpx.HTTPError as exc:
            raise Unavailable("the locator cannot answer now", code="locator_unavailable") from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def _proxy(dispatch: DispatchDep) -> TeamProxy:
    if dispatch.team is None:
        raise Unavailable("the team page cannot reach the locator here", code="locator_unavailable")
    return dispatch.team


ProxyDep = Annotated[TeamProxy, Depends(_proxy)]


async def _body(request: Request) -> Any:
    """The page's JSON body, to be checked by the locator; malformed JSON is refused here."""
    try:
        return await request.json()
    except ValueError as exc:
        raise Invalid("the body is not JSON") from exc


def _passed_on(answer: httpx.Response) -> JSONResponse:
    """The locator's answer as it came (its bodies are JSON, errors included)."""
    body = answer.json() if answer.content else None
    return JSONResponse(body, status_code=answer.status_code)


async def _forward(
    proxy: TeamProxy,
    method: str,
    path: str,
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    with_body: bool = False,
) -> JSONResponse:
    """Call the locator with the dispatcher's own token (and the page's JSON body) and
    pass its answer back as it came."""
    bearer = token_from_request(request, credentials)
    if with_body:
        answer = await proxy.send(method, path, bearer=bearer, json=await _body(request))
    else:
        answer = await proxy.send(method, path, bearer=bearer)
    return _passed_on(answer)


async def current_incidents(dispatch: Dispatch) -> dict[uuid.UUID, CurrentIncident]:
    """Who is working an open incident now (a unit not yet cleared)."""
    query = (
        select(Unit.responder_id, Unit.status, Incident.id, Incident.category)
        .join(Incident, col(Incident.id) == col(Unit.incident_id))
        .where(col(Unit.cleared_at).is_(None))
        .where(col(Incident.status) == IncidentStatus.OPEN.value)
    )
    async with dispatch.sessions() as session:
        rows = (await session.exec(query)).all()
    return {
        responder_id: CurrentIncident(incident_id=incident_id, category=category, unit_status=st)
        for responder_id, st, incident_id, category in rows
    }


@router.get("", response_model=list[TeamMember])
async def list_team(
    request: Request,
    _: Dispatcher,
    credentials: Credentials,
    proxy: ProxyDep,
    dispatch: DispatchDep,
) -> list[TeamMember] | JSONResponse:
    """Every registered responder with duty, status, last position and current incident."""
    answer = await proxy.send(
        "GET",
        "/v1/responders",
        bearer=token_from_request(request, credentials),
        params={"limit": dispatch.settings.console_team_limit},
    )
    if answer.status_code != 200:
        return _passed_on(answer)
    working = await current_incidents(dispatch)
    members = []
    for row in answer.json():
        responder_id = uuid.UUID(str(row["responder_id"]))
        members.append(TeamMember(**row, incident=working.get(responder_id)))
    return sorted(members, key=lambda m: (not m.on_duty, m.name.casefold()))


@router.post("")
async def register(
    request: Request, _: Dispatcher, credentials: Credentials, proxy: ProxyDep
) -> JSONResponse:
    """Register a responder (``POST /v1/responders``)."""
    return await _forward(proxy, "POST", "/v1/responders", request, credentials, with_body=True)


@router.get("/{responder_id}")
async def one(
    responder_id: uuid.UUID,
    request: Request,
    _: Dispatcher,
    credentials: Credentials,
    proxy: ProxyDep,
) -> JSONResponse:
    """One responder with phone and position (``GET /v1/responders/{id}``)."""
    return await _forward(proxy, "GET", f"/v1/responders/{responder_id}", request, credentials)


@router.patch("/{responder_id}")
async def edit(
    responder_id: uuid.UUID,
    request: Request,
    _: Dispatcher,
    credentials: Credentials,
    proxy: ProxyDep,
) -> JSONResponse:
    """Edit a responder (``PATCH /v1/responders/{id}``)."""
    return await _forward(
        proxy, "PATCH", f"/v1/responders/{responder_id}", request, credentials, with_body=True
    )


@router.put("/{responder_id}/duty")
async def duty(
    responder_id: uuid.UUID,
    request: Request,
    _: Dispatcher,
    credentials: Credentials,
    proxy: ProxyDep,
) -> JSONResponse:
    """Put a responder on or off duty (``PUT /v1/responders/{id}/duty``)."""
    return await _forward(
        proxy, "PUT", f"/v1/responders/{responder_id}/duty", request, credentials, with_body=True
    )


@router.post("/{responder_id}/{action}")
async def act(
    responder_id: uuid.UUID,
    action: str,
    request: Request,
    _: Dispatcher,
    credentials: Credentials,
    proxy: ProxyDep,
) -> JSONResponse:
    """Revoke a responder or issue them a sign-in pairing code."""
    if action not in ("revoke", "pairing"):
        raise NotFound("no such action")
    return await _forward(
        proxy, "POST", f"/v1/responders/{responder_id}/{action}", request, credentials
    )
