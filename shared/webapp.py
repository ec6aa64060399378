"""Serving the field apps (citizen and responder): static files from ``web/``, the
catalogue of category names and the documented error shape of their routes.

The apps are plain HTML, CSS and JavaScript with no build step. Leaflet and axe-core
come from the npm registry into ``web/node_modules`` (``make venv`` runs ``npm ci``);
only Leaflet is served, from here, never from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
LEAFLET_DIR = WEB_DIR / "node_modules" / "leaflet" / "dist"

# Category names in both languages; a deployment may override them (CATEGORY_NAMES).


class CategoryName(BaseModel):
    """One category with its name in each language."""

    id: str
    names: dict[str, str]


def category_names(categories: list[str], names: dict[str, dict[str, str]]) -> list[CategoryName]:
    """The configured categories, each named in every language (the id where unnamed)."""
    return [CategoryName(id=c, names=names.get(c) or {"en": c, "zh-CN": c}) for c in categories]


def mount_web_app(app: FastAPI, *, prefix: str, name: str) -> None:
    """Serve ``web/<name>/`` at ``prefix`` with the shared catalogues and Leaflet beneath it.

    Call after the app's own routes (so ``<prefix>/config.json`` routes win over files).
    """
    if LEAFLET_DIR.is_dir():
        app.mount(f"{prefix}/vendor/leaflet", StaticFiles(directory=LEAFLET_DIR), f"{name}-leaflet")
    app.mount(f"{prefix}/common", StaticFiles(directory=WEB_DIR / "common"), f"{name}-common")
    app.mount(prefix, StaticFiles(directory=WEB_DIR / name, html=True), f"{name}-app")
