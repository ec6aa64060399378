"""Regenerate the committed API documents: every service's OpenAPI and the events' AsyncAPI.

``python -m tools.apidocs`` (or ``make docs``) writes ``docs/openapi/<service>.json``
from each service's ``create_app`` and ``docs/asyncapi.json`` from ``shared/events.py``.
Run it after changing a route, a public model or an event; ``--check`` only reports
which files are out of date (exit 1), as the tests do.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from tools.asyncapi import ASYNCAPI_PATH
from tools.asyncapi import build as build_asyncapi
from tools.asyncapi import render as render_asyncapi

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_DIR = ROOT / "docs" / "openapi"
SERVICES = ("intake", "dispatch", "volunteer-locator", "notification")
COMMAND = "python -m tools.apidocs"
# Only to build the apps; nothing is signed and no connection is opened.
_DOC_SECRET = SecretStr("apidocs-only-" + "x" * 32)


def _intake_app() -> FastAPI:
    from services.intake.app import create_app
    from services.intake.settings import IntakeSettings

    return create_app(IntakeSettings.model_construct(auth_secret=_DOC_SECRET))


def _dispatch_app() -> FastAPI:
    from services.dispatch.app import create_app
    from services.dispatch.settings import DispatchSettings

    return create_app(DispatchSettings.model_construct(auth_secret=_DOC_SECRET))


def _locator_app() -> FastAPI:
    from services.volunteer_locator.app import create_app
    from services.volunteer_locator.settings import LocatorSettings

    return create_app(LocatorSettings.model_construct(auth_secret=_DOC_SECRET))


def _notification_app() -> FastAPI:
    from services.notification.app import create_app
    from services.notification.settings import NotificationSettings

    return create_app(NotificationSettings.model_construct(auth_secret=_DOC_SECRET))


# Each service's app, built from settings alone (its lifespan, which connects, never runs).
APPS: dict[str, Callable[[], FastAPI]] = {
    "intake": _intake_app,
    "dispatch": _dispatch_app,
    "volunteer-locator": _locator_app,
    "notification": _notification_app,
}


def _openapi_of(build: Callable[[], FastAPI]) -> Callable[[], dict[str, Any]]:
    return lambda: build().openapi()


OPENAPI: dict[str, Callable[[], dict[str, Any]]] = {
    name: _openapi_of(build) for name, build in APPS.items()
}


def render_json(document: dict[str, Any]) -> str:
    """A document as committed: two-space indent, final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def openapi_path(service: str) -> Path:
    """Where a service's OpenAPI is committed."""
    return OPENAPI_DIR / f"{service}.json"


def documents() -> dict[Path, str]:
    """Every generated document by the path it is committed at."""
    texts = {openapi_path(name): render_json(build()) for name, build in OPENAPI.items()}
    texts[ASYNCAPI_PATH] = render_asyncapi(build_asyncapi())
    return texts


def stale(texts: dict[Path, str]) -> list[Path]:
    """The committed documents that differ from ``texts`` (or are missing)."""
    return [
        path
        for path, text in texts.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write every document, or with ``--check`` list the stale ones and exit 1."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale documents")
    args = parser.parse_args(argv)
    texts = documents()
    if args.check:
        out_of_date = stale(texts)
        for path in out_of_date:
            print(f"out of date: {path.relative_to(ROOT)} (run {COMMAND})")
        return 1 if out_of_date else 0
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
