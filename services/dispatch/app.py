"""Builds dispatch's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.dispatch.handlers import build_handlers
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import OUTBOX, DispatchTable
from services.dispatch.routes import router
from services.dispatch.settings import DispatchSettings
from shared.clock import Clock, SystemClock
from shared.events import REPORTS
from shared.http import build_app
from shared.logging import configure_logging
from shared.runtime import open_runtime


def create_app(settings: DispatchSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the dispatch app; connections open in the lifespan."""
    settings = settings or DispatchSettings()
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=DispatchTable.metadata, outbox=OUTBOX
            )
            app.state.runtime = runtime
            app.state.readiness = runtime.readiness_checks()
            await runtime.start_consumer(
                stack, topics=[REPORTS], handlers=build_handlers(runtime, metrics)
            )
            yield

    configure_logging(settings.service_name, settings.log_level)
    app = build_app(
        settings=settings,
        title="Dispatch",
        description="Incidents, offers, the 1-3-5 clocks and the live queue.",
        lifespan=lifespan,
        registry=registry,
    )
    app.state.clock = clock or SystemClock()
    app.state.metrics = metrics
    app.include_router(router)
    return app
