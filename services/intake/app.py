"""Builds intake's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.intake.area import load_service_area
from services.intake.context import Intake
from services.intake.handlers import build_handlers
from services.intake.live import ReportChanges
from services.intake.metrics import IntakeMetrics
from services.intake.models import OUTBOX, IntakeTable
from services.intake.ratelimit import RedisRateLimiter
from services.intake.routes import posting, router
from services.intake.settings import IntakeSettings
from services.intake.webapp import mount_citizen_app
from shared.clock import Clock, SystemClock
from shared.events import INCIDENTS
from shared.http import build_app
from shared.logging import configure_logging
from shared.runtime import open_runtime


def create_app(settings: IntakeSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the intake app; connections open in the lifespan."""
    settings = settings or IntakeSettings()
    registry = CollectorRegistry()
    metrics = IntakeMetrics(registry, categories=settings.categories)
    the_clock = clock or SystemClock()
    area = load_service_area(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=IntakeTable.metadata, outbox=OUTBOX
            )
            app.state.runtime = runtime
            changes = ReportChanges(runtime.redis)
            await changes.start()
            stack.push_async_callback(changes.stop)
            intake = Intake(
                settings=settings,
                area=area,
                sessions=runtime.sessions,
                work=runtime.units_of_work(),
                limiter=RedisRateLimiter(runtime.redis),
                changes=changes,
                metrics=metrics,
                clock=the_clock,
            )
            app.state.intake = intake
            # The reporter's timeline: not on the way to an offer.
            await runtime.start_consumer(
                stack,
                topics=[INCIDENTS],
                handlers={},
                batch_handlers=build_handlers(intake),
                background=True,
            )
            app.state.readiness = runtime.readiness_checks()
            yield

    configure_logging(settings.service_name, settings.log_level)
    app = build_app(
        settings=settings,
        title="Intake",
        description="Takes citizens' reports and follows them to the end.",
        lifespan=lifespan,
        registry=registry,
    )
    app.state.clock = the_clock
    app.state.metrics = metrics
    app.include_router(posting)
    app.include_router(router)
    mount_citizen_app(app)
    return app
