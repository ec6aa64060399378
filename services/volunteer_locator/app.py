"""Builds the volunteer-locator's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.volunteer_locator import service
from services.volunteer_locator.context import Locator
from services.volunteer_locator.eta import EtaProvider, StraightLineEta
from services.volunteer_locator.handlers import (
    build_batch_handlers,
    build_handlers,
    build_raw_lanes,
)
from services.volunteer_locator.index import GeoIndex
from services.volunteer_locator.metrics import LocatorMetrics
from services.volunteer_locator.models import OUTBOX, LocatorTable
from services.volunteer_locator.pairing import router as pairing_router
from services.volunteer_locator.rebuild import STARTUP, PositionKeeper, rebuild_index
from services.volunteer_locator.routes import router
from services.volunteer_locator.settings import LocatorSettings
from services.volunteer_locator.webapp import mount_responder_app
from shared.clock import Clock, SystemClock
from shared.db import is_sqlite
from shared.events import RESPONDER_LOCATIONS, RESPONDER_STATUS, LocationReported
from shared.http import build_app
from shared.logging import configure_logging
from shared.redis_epoch import RedisEpoch
from shared.revocations import open_revocations, revocation_handlers
from shared.runtime import open_runtime


def create_app(
    settings: LocatorSettings | None = None,
    *,
    clock: Clock | None = None,
    eta: EtaProvider | None = None,
) -> FastAPI:
    """Build the locator app; connections open in the lifespan."""
    settings = settings or LocatorSettings()
    registry = CollectorRegistry()
    metrics = LocatorMetrics(registry)
    clock = clock or SystemClock()
    eta = eta or StraightLineEta(settings.speeds_kmh)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=LocatorTable.metadata, outbox=OUTBOX
            )
            index = GeoIndex(
                runtime.redis, prefix=settings.redis_prefix, stale_after_s=settings.stale_after_s
            )
            positions = PositionKeeper(
                runtime.sessions,
                interval_s=settings.position_persist_interval_s,
                sqlite_db=is_sqlite(settings.database_url),
            )
            locator = Locator(
                settings=settings,
                sessions=runtime.sessions,
                work=runtime.units_of_work(),
                publisher=runtime.publisher,
                redis=runtime.redis,
                index=index,
                eta=eta,
                metrics=metrics,
                clock=clock,
                keep_positions=positions.keep,
            )

            async def rebuild(reason: str) -> None:
                await rebuild_index(locator=locator, reason=reason)

            # Redis may be new or flushed; the database is the registry's truth. At start
            # and whenever the epoch key shows Redis lost or replaced the index.
            await rebuild(STARTUP)
            epoch = RedisEpoch(
                runtime.redis,
                service=settings.service_name,
                rebuild=rebuild,
                interval_s=settings.redis_epoch_interval_s,
            )
            await stack.enter_async_context(epoch.running())
            locator.redis_lost = epoch.check_soon
            app.state.locator = locator
            revocations = await open_revocations(
                stack, app=app, redis=runtime.redis, settings=settings
            )
            # Two groups, so a flood of pings never queues behind (or ahead of) bookings.
            await runtime.start_consumer(
                stack,
                topics=[RESPONDER_LOCATIONS],
                handlers={},
                batch_handlers=build_batch_handlers(locator),
                raw_lanes=build_raw_lanes(locator) if settings.ping_raw_lane else None,
                naturally_idempotent=frozenset({LocationReported}),
                group_id=f"{settings.consumer_group}-locations",
                max_records=settings.ping_batch_max_records,
            )
            await runtime.start_consumer(
                stack,
                topics=[RESPONDER_STATUS],
                handlers={**build_handlers(locator), **revocation_handlers(revocations)},
                group_id=f"{settings.consumer_group}-status",
                # Registrations, duty and revocations: claims and releases go over HTTP.
                background=True,
            )
            await stack.enter_async_context(
                service.running_housekeeping(locator=locator, sessions=runtime.sessions)
            )
            app.state.runtime = runtime
            app.state.readiness = runtime.readiness_checks()
            yield

    configure_logging(settings.service_name, settings.log_level)
    app = build_app(
        settings=settings,
        title="Volunteer locator",
        description="Responders, duty, live positions and who is nearest.",
        lifespan=lifespan,
        registry=registry,
    )
    app.state.clock = clock
    app.state.metrics = metrics
    app.include_router(router)
    app.include_router(pairing_router)
    mount_responder_app(app)
    return app
