"""The dispatcher console at ``GET /console``: a static page plus two read-only helpers.

The page is plain HTML, CSS and JavaScript with no build step. Leaflet is installed
from the npm registry into ``console/node_modules`` (``make venv`` runs ``npm ci``)
and served from here, never from a CDN. Every piece of data the page shows comes
from the API with the dispatcher's token; the page itself holds no data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from shared.errors import ApiError

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
LEAFLET_DIR = CONSOLE_DIR / "node_modules" / "leaflet" / "dist"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}

router = APIRouter(tags=["console"], include_in_schema=False)


@router.get("/console")
async def console_page() -> FileResponse:
    """The console page."""
    return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html")


@router.get("/console/assets/{name}")
async def console_asset(name: str) -> FileResponse:
    """The console's own script and style sheet."""
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such asset")
    return FileResponse(CONSOLE_DIR / name, media_type=ASSETS[name])


@router.get("/console/config.json")
async def console_config(request: Request) -> JSONResponse:
    """Map settings: the tile server is configurable and may be empty (no internet)."""
    settings: Any = request.app.state.settings
    return JSONResponse(
        {
            "tile_url": getattr(settings, "console_tile_url", ""),
            "tile_attribution": getattr(settings, "console_tile_attribution", ""),
            "center": list(getattr(settings, "console_map_center", (23.02, 113.75))),
            "zoom": getattr(settings, "console_map_zoom", 13),
        }
    )


def mount_vendor(app: Any) -> None:
    """Serve Leaflet from the local npm install, if it is there."""
    if LEAFLET_DIR.is_dir():
        app.mount("/console/vendor/leaflet", StaticFiles(directory=LEAFLET_DIR), name="leaflet")
