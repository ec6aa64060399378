"""The responder app at ``/responder/``: its settings for the page, then the static files.

The page talks to three services: this one (pairing, duty, position), dispatch (offers,
unit status, recent incidents) and notification (the live stream, Web Push). Behind the
gateway they share one origin; under ``make run`` they are separate ports, so the page
is told their public URLs here and those services allow this origin by ``CORS_ORIGINS``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel

from services.volunteer_locator.routes import LocatorDep
from services.volunteer_locator.settings import LocatorSettings
from shared.webapp import WEB_DIR, CategoryName, category_names, mount_web_app

PREFIX = "/responder"
router = APIRouter(include_in_schema=False)


class ResponderAppConfig(BaseModel):
    """What the page needs to know (public: it holds no data)."""

    locator_url: str
    dispatch_url: str
    notification_url: str
    time_zone: str
    categories: list[CategoryName]


@router.get(f"{PREFIX}/config.json", response_model=ResponderAppConfig)
async def responder_app_config(locator: LocatorDep) -> ResponderAppConfig:
    """Where the other services are, the local time zone and the category names."""
    settings = locator.settings
    return ResponderAppConfig(
        locator_url="",
        dispatch_url=settings.app_dispatch_url.rstrip("/"),
        notification_url=settings.app_notification_url.rstrip("/"),
        time_zone=settings.app_time_zone,
        categories=category_names(list(settings.category_names), settings.category_names),
    )


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def page_policy(settings: LocatorSettings) -> str:
    """The page's strict CSP; ``connect-src`` also names dispatch and notification when they
    are on other origins (``make run``), so the page may call and stream from them."""
    others = {_origin(settings.app_dispatch_url), _origin(settings.app_notification_url)}
    connect = " ".join(["'self'", *sorted(o for o in others if o)])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; font-src 'self'; manifest-src 'self'; worker-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


@router.get(f"{PREFIX}/")
async def responder_app_page(locator: LocatorDep) -> FileResponse:
    """The app's page, with a policy that lets it reach the services it calls."""
    return FileResponse(
        WEB_DIR / "responder" / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": page_policy(locator.settings)},
    )


def mount_responder_app(app: FastAPI) -> None:
    """Add the pairing routes' companion: the responder app and its config."""
    app.include_router(router)
    mount_web_app(app, prefix=PREFIX, name="responder")
