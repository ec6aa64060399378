"""The dispatcher console at ``GET /console``: a static page plus two read-only helpers.

The page is plain HTML, CSS and JavaScript with no build step. Leaflet is installed
from the npm registry into ``console/node_modules`` (``make venv`` runs ``npm ci``)
and served from here, never from a CDN. Every piece of data the page shows comes
from the API with the dispatcher's token; the page itself holds no data.

The two helpers under ``/console/api`` ask the volunteer-locator on the dispatcher's
behalf (with dispatch's service token), so the page talks to one origin only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from services.dispatch import service
from services.dispatch.domain import IncidentStatus
from services.dispatch.grids import DEMO_GRIDS
from services.dispatch.locator_client import LocatorUnavailable, ResponderDirectory
from services.dispatch.routes import DispatchDep
from services.dispatch.settings import DispatchSettings
from shared.auth import Principal, Role, require_roles, token_from_request
from shared.errors import NotFound, Unavailable
from shared.security import CSP, content_security_policy, tile_sources

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
LEAFLET_DIR = CONSOLE_DIR / "node_modules" / "leaflet" / "dist"
ASSETS = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "trace.js": "text/javascript",
    "trace.css": "text/css",
    "i18n.js": "text/javascript",
    "team.js": "text/javascript",
    "team.css": "text/css",
}
CATALOGUES = {"en": CONSOLE_DIR / "i18n" / "en.json", "zh-CN": CONSOLE_DIR / "i18n" / "zh-CN.json"}

router = APIRouter(tags=["console"], include_in_schema=False)
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class ConsoleConfig(BaseModel):
    """Map settings (the tile server is configurable and may be empty: no internet), the
    local time zone and the categories' names by language."""

    tile_url: str
    tile_attribution: str
    center: tuple[float, float]
    zoom: int
    time_zone: str
    languages: list[str]
    category_labels: dict[str, dict[str, str]]


class CandidatePublic(BaseModel):
    """A free responder who could take the incident's next unit, with their ETA."""

    responder_id: uuid.UUID
    kind: str
    distance_m: float
    eta_s: float
    status: str


class ResponderOnMap(BaseModel):
    """An on-duty responder where the locator last saw them."""

    responder_id: uuid.UUID
    kind: str
    status: str | None
    lat: float | None
    lon: float | None
    last_seen_at: datetime | None


async def _settings(request: Request) -> DispatchSettings:
    settings: DispatchSettings = request.app.state.settings
    return settings


async def _directory(dispatch: DispatchDep) -> ResponderDirectory:
    if not isinstance(dispatch.locator, ResponderDirectory):
        raise Unavailable("this locator cannot list responders", code="locator_unavailable")
    return dispatch.locator


SettingsDep = Annotated[DispatchSettings, Depends(_settings)]
DirectoryDep = Annotated[ResponderDirectory, Depends(_directory)]


@router.get("/console")
async def console_page(settings: SettingsDep) -> FileResponse:
    """The console page, under the strict policy widened only for the configured map tiles."""
    policy = content_security_policy(img_sources=tile_sources(settings.console_tile_url))
    return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html", headers={CSP: policy})


@router.get("/console/assets/{name}")
async def console_asset(name: str) -> FileResponse:
    """The console's own script and style sheet."""
    if name not in ASSETS:
        raise NotFound("no such asset")
    return FileResponse(CONSOLE_DIR / name, media_type=ASSETS[name])


@router.get("/console/team")
async def team_page(settings: SettingsDep) -> FileResponse:
    """The team page: register, edit, pair, take off duty and revoke responders."""
    policy = content_security_policy(img_sources=tile_sources(settings.console_tile_url))
    return FileResponse(CONSOLE_DIR / "team.html", media_type="text/html", headers={CSP: policy})


@router.get("/console/config.json", response_model=ConsoleConfig)
async def console_config(dispatch: DispatchDep) -> ConsoleConfig:
    """Map, time zone and category names for the page (public: they hold no data)."""
    settings = dispatch.settings
    return ConsoleConfig(
        tile_url=settings.console_tile_url,
        tile_attribution=settings.console_tile_attribution,
        center=settings.console_map_center,
        zoom=settings.console_map_zoom,
        time_zone=settings.local_time_zone,
        languages=list(CATALOGUES),
        category_labels=dispatch.category_labels,
    )


@router.get("/console/i18n/{language}.json")
async def console_catalogue(language: str) -> FileResponse:
    """The console's message catalogue in one language (``en`` or ``zh-CN``)."""
    if language not in CATALOGUES:
        raise NotFound("no such language")
    return FileResponse(CATALOGUES[language], media_type="application/json")


@router.get("/console/grids.geojson")
async def console_grids(settings: SettingsDep) -> FileResponse:
    """The configured grids (``GRIDS_PATH``), the map's base layer when there are no tiles."""
    return FileResponse(
        Path(settings.grids_path) if settings.grids_path else DEMO_GRIDS,
        media_type="application/geo+json",
    )


@router.get("/console/api/incidents/{incident_id}/candidates", response_model=list[CandidatePublic])
async def incident_candidates(
    incident_id: uuid.UUID,
    dispatch: DispatchDep,
    _: Dispatcher,
    directory: DirectoryDep,
    settings: SettingsDep,
) -> list[CandidatePublic]:
    """The free responders eligible for the incident's next unit, by ETA (nobody is claimed)."""
    target = await service.next_assignment(dispatch=dispatch, incident_id=incident_id)
    if target.status != IncidentStatus.OPEN:
        return []
    try:
        found = await directory.nearest(
            lat=target.lat,
            lon=target.lon,
            kinds=target.slot.kinds,
            skills=target.slot.skills,
            limit=settings.console_candidate_limit,
        )
    except LocatorUnavailable as exc:
        raise Unavailable("the locator cannot answer now", code="locator_unavailable") from exc
    return [
        CandidatePublic(
            responder_id=c.responder_id,
            kind=c.kind,
            distance_m=round(c.distance_m, 1),
            eta_s=round(c.eta_s, 1),
            status=c.status,
        )
        for c in found
    ]


@router.get("/console/api/responders", response_model=list[ResponderOnMap])
async def on_duty_responders(
    request: Request, _: Dispatcher, credentials: Credentials, directory: DirectoryDep
) -> list[ResponderOnMap]:
    """On-duty responders and where they are, for the map.

    The locator lists responders to dispatchers, so dispatch asks with the dispatcher's
    own token rather than its service token: the locator sees who is really asking.
    """
    try:
        found = await directory.on_duty(bearer=token_from_request(request, credentials))
    except LocatorUnavailable as exc:
        raise Unavailable("the locator cannot answer now", code="locator_unavailable") from exc
    return [
        ResponderOnMap(
            responder_id=r.responder_id,
            kind=r.kind,
            status=r.status,
            lat=r.lat,
            lon=r.lon,
            last_seen_at=r.last_seen_at,
        )
        for r in found
    ]


def mount_vendor(app: FastAPI) -> None:
    """Serve Leaflet from the local npm install, if it is there."""
    if LEAFLET_DIR.is_dir():
        app.mount("/console/vendor/leaflet", StaticFiles(directory=LEAFLET_DIR), name="leaflet")
