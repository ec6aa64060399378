"""The citizen app at ``/app/``: its settings for the page, the base map, the static files.

The page talks to intake only (post, follow and cancel a report), so it is same-origin
everywhere and needs no cross-origin rule.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel

from services.intake.routes import IntakeDep
from shared.errors import NotFound
from shared.webapp import CategoryName, category_names, mount_web_app

PREFIX = "/app"
router = APIRouter(include_in_schema=False)


class CitizenAppConfig(BaseModel):
    """What the page needs to know (public: it holds no data)."""

    time_zone: str
    phone_country_code: str
    categories: list[CategoryName]
    grids_url: str


@router.get(f"{PREFIX}/config.json", response_model=CitizenAppConfig)
async def citizen_app_config(intake: IntakeDep) -> CitizenAppConfig:
    """The categories in both languages, the local time zone and where the base map is."""
    settings = intake.settings
    return CitizenAppConfig(
        time_zone=settings.app_time_zone,
        phone_country_code=settings.app_phone_country_code,
        categories=category_names(settings.categories, settings.category_names),
        grids_url=f"{PREFIX}/grids.geojson",
    )


@router.get(f"{PREFIX}/grids.geojson")
async def citizen_app_grids(intake: IntakeDep) -> FileResponse:
    """The configured grids, drawn as the map's base layer (no tile server needed)."""
    path = intake.settings.app_grids_path
    if not path.is_file():
        raise NotFound("no grids are configured")
    return FileResponse(path, media_type="application/geo+json")


def mount_citizen_app(app: FastAPI) -> None:
    """Add the citizen app and its config to intake."""
    app.include_router(router)
    mount_web_app(app, prefix=PREFIX, name="citizen")
