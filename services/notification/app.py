"""Builds notification's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notification.models import NotificationTable
from services.notification.settings import NotificationSettings
from shared.clock import Clock, SystemClock
from shared.http import build_app
from shared.logging import configure_logging
from shared.runtime import open_runtime


def create_app(
    settings: NotificationSettings | None = None, *, clock: Clock | None = None
) -> FastAPI:
    """Build the notification app; connections open in the lifespan."""
    settings = settings or NotificationSettings()
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=NotificationTable.metadata
            )
            app.state.runtime = runtime
            app.state.readiness = runtime.readiness_checks()
            yield

    configure_logging(settings.service_name, settings.log_level)
    app = build_app(
        settings=settings,
        title="Notification",
        description="Offers and updates to responders, reporters and dispatchers.",
        lifespan=lifespan,
        registry=registry,
    )
    app.state.clock = clock or SystemClock()
    return app
