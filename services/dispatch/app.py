"""Builds dispatch's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.dispatch import console, coverage_routes, review_routes, team
from services.dispatch.context import Dispatch
from services.dispatch.coverage_live import HttpAvailableSource, LiveCoverage
from services.dispatch.feed import RedisQueueFeed
from services.dispatch.grids import GridIndex
from services.dispatch.handlers import (
    NATURALLY_IDEMPOTENT,
    build_batch_handlers,
    build_handlers,
)
from services.dispatch.locator_client import HttpLocator
from services.dispatch.metrics import DispatchMetrics, describe_grids
from services.dispatch.models import OUTBOX, DispatchTable
from services.dispatch.plans import load_plans
from services.dispatch.responder_history import router as responder_history_router
from services.dispatch.review import record_coverage
from services.dispatch.revocation import revocation_handlers
from services.dispatch.routes import router
from services.dispatch.service.bookings import Reconciler
from services.dispatch.settings import DispatchSettings
from services.dispatch.timers import TimerScheduler
from shared.categories import load_category_labels
from shared.clock import Clock, SystemClock
from shared.db import is_sqlite
from shared.events import REPORTS, RESPONDER_STATUS
from shared.http import build_app
from shared.logging import configure_logging
from shared.revocations import open_revocations
from shared.runtime import open_runtime


def create_app(settings: DispatchSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the dispatch app; connections open in the lifespan."""
    settings = settings or DispatchSettings()
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    the_clock = clock or SystemClock()
    category_labels = load_category_labels(settings.category_labels_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=DispatchTable.metadata, outbox=OUTBOX
            )
            locator = HttpLocator(
                base_url=settings.locator_url,
                secret=settings.auth_secret.get_secret_value(),
                timeout_s=settings.locator_timeout_s,
                trace=settings.decision_trace,
            )
            stack.push_async_callback(locator.aclose)
            team_proxy = team.TeamProxy(
                base_url=settings.locator_url, timeout_s=settings.locator_timeout_s
            )
            stack.push_async_callback(team_proxy.aclose)
            grids = GridIndex.load(settings.grids_path)
            describe_grids(metrics, grids.grids())
            dispatch = Dispatch(
                settings=settings,
                sessions=runtime.sessions,
                locator=locator,
                clock=the_clock,
                plans=load_plans(settings.plans_path),
                grids=grids,
                metrics=metrics,
                feed=RedisQueueFeed(runtime.redis),
                sqlite=is_sqlite(settings.database_url),
                category_labels=category_labels,
                team=team_proxy,
                kick_relay=runtime.relay.kick if runtime.relay else lambda: None,
            )
            available = HttpAvailableSource(
                base_url=settings.locator_url,
                secret=settings.auth_secret.get_secret_value(),
                timeout_s=settings.locator_timeout_s,
            )
            stack.push_async_callback(available.aclose)
            coverage = LiveCoverage(
                settings=settings,
                grids=grids,
                plans=dispatch.plans,
                source=available,
                metrics=metrics,
                clock=the_clock,
                sample=partial(
                    record_coverage,
                    runtime.sessions,
                    keep=timedelta(hours=settings.coverage_sample_keep_h),
                ),
            )
            app.state.coverage = coverage
            await coverage.start()
            stack.push_async_callback(coverage.stop)
            scheduler = TimerScheduler(dispatch)
            dispatch.wake_timers = scheduler.wake
            dispatch.retry_soon = scheduler.retry_soon
            await scheduler.start()
            stack.push_async_callback(scheduler.stop)
            reconciler = Reconciler(dispatch)
            dispatch.reconcile_soon = reconciler.request
            await stack.enter_async_context(reconciler.running())
            app.state.runtime = runtime
            app.state.dispatch = dispatch
            app.state.readiness = runtime.readiness_checks()
            revocations = await open_revocations(
                stack, app=app, redis=runtime.redis, settings=settings
            )
            await runtime.start_consumer(
                stack,
                topics=[REPORTS, RESPONDER_STATUS],
                handlers={
                    **build_handlers(dispatch),
                    **revocation_handlers(dispatch, revocations),
                },
                batch_handlers=build_batch_handlers(dispatch),
                naturally_idempotent=NATURALLY_IDEMPOTENT,
                # A report waits on the locator's claim; the next partition's need not.
                # Same-spot reports still meet in order (Dispatch.opening_lock).
                concurrent_partitions=True,
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
    app.state.clock = the_clock
    app.state.metrics = metrics
    app.include_router(router)
    app.include_router(responder_history_router)
    app.include_router(console.router)
    app.include_router(team.router)
    app.include_router(coverage_routes.router)
    app.include_router(coverage_routes.assets)
    app.include_router(review_routes.router)
    console.mount_vendor(app)
    return app
