"""The citizen app at ``/app/``: its settings for the page, the base map, the static files.

The page talks to intake only (post, follow and cancel a report), so it is same-origin
everywhere and needs no cross-origin rule.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from services.intake.settings import IntakeSettings
from shared.errors import ApiError
from shared.webapp import CategoryName, category_names, mount_web_app

PREFIX = "/app"
router = APIRouter(include_in_schema=False)


class CitizenAppConfig(BaseModel):
    """What the page needs to know (public: it holds no data)."""

    time_zone: str
    phone_country_code: str
    categories: list[CategoryName]
    grids_url: str


def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


@router.get(f"{PREFIX}/config.json", response_model=CitizenAppConfig)
async def citizen_app_config(request: Request) -> CitizenAppConfig:
    """The categories in both languages, the local time zone and where the base map is."""
    settings = _settings(request)
    return CitizenAppConfig(
        time_zone=settings.app_time_zone,
        phone_country_code=settings.app_phone_country_code,
        categories=category_names(settings.categories, settings.category_names),
        grids_url=f"{PREFIX}/grids.geojson",
    )


@router.get(f"{PREFIX}/grids.geojson")
async def citizen_app_grids(request: Request) -> FileResponse:
    """The configured grids, drawn as the map's base layer (no tile server needed)."""
    path = _settings(request).app_grids_path
    if not path.is_file():
        raise ApiError(404, "not_found", "no grids are configured")
    return FileResponse(path, media_type="application/geo+json")


def mount_citizen_app(app: FastAPI) -> None:
    """Add the citizen app and its config to intake."""
    app.include_router(router)
    mount_web_app(app, prefix=PREFIX, name="citizen")
