"""Builds notification's app: ``create_app(settings)`` and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notification.channels import (
    Channel,
    SmsChannel,
    StreamChannel,
    WebhookChannel,
    load_sms_sender,
    webhook_client,
)
from services.notification.context import Notifier
from services.notification.egress import Resolver, SystemResolver
from services.notification.handlers import build_handlers
from services.notification.live import LiveHub
from services.notification.metrics import NotificationMetrics
from services.notification.models import NotificationTable
from services.notification.push import PushSetup, build_push
from services.notification.push import router as push_router
from services.notification.rebuild import keep_streams
from services.notification.routes import router
from services.notification.service import Routing
from services.notification.settings import NotificationSettings
from services.notification.workers import DeliveryWorkers, RetryPolicy
from shared.clock import Clock, SystemClock
from shared.events import INCIDENTS, RESPONDER_STATUS
from shared.http import build_app
from shared.logging import configure_logging
from shared.ratelimit import RedisRateLimiter
from shared.revocations import open_revocations, revocation_handlers
from shared.runtime import open_runtime


def create_app(
    settings: NotificationSettings | None = None,
    *,
    clock: Clock | None = None,
    resolver: Resolver | None = None,
) -> FastAPI:
    """Build the notification app; connections open in the lifespan."""
    settings = settings or NotificationSettings()
    registry = CollectorRegistry()
    metrics = NotificationMetrics(registry)
    clock = clock or SystemClock()
    resolver = resolver or SystemResolver()
    secret = settings.webhook_signing_secret

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await open_runtime(
                stack, settings, registry=registry, metadata=NotificationTable.metadata
            )
            app.state.runtime = runtime
            hub = LiveHub(runtime.redis)
            await hub.start()
            stack.push_async_callback(hub.stop)
            app.state.readiness = {**runtime.readiness_checks(), "live": hub.subscribed}

            stream = StreamChannel(
                runtime.redis,
                maxlen=settings.stream_maxlen,
                marker_ttl_s=settings.delivery_marker_ttl_s,
            )
            channels: dict[str, Channel] = {"stream": stream}
            if secret is not None:
                http = webhook_client(
                    connect_timeout_s=settings.webhook_connect_timeout_s,
                    timeout_s=settings.webhook_timeout_s,
                )
                stack.push_async_callback(http.aclose)
                channels["webhook"] = WebhookChannel(
                    http,
                    secret=secret.get_secret_value(),
                    clock=clock,
                    policies={
                        "dispatcher": settings.dispatcher_policy,
                        "reporter": settings.reporter_policy,
                    },
                    resolver=resolver,
                    timeout_s=settings.webhook_timeout_s,
                    max_response_bytes=settings.webhook_max_response_bytes,
                )
            if "sms" in settings.responder_channels:
                channels["sms"] = SmsChannel(load_sms_sender(settings.sms_sender))
            push_setup: PushSetup | None = None
            push = build_push(settings, runtime.sessions, clock)
            if push is not None:
                push_setup, channels["push"] = push
                await push_setup.subscriptions.adopt_from_redis(runtime.redis)

            # Before the workers start, so pending deliveries it puts back are not sent twice.
            app.state.redis_epoch = await keep_streams(
                stack,
                redis=runtime.redis,
                sessions=runtime.sessions,
                stream=stream,
                settings=settings,
                metrics=metrics,
                clock=clock,
            )

            workers = DeliveryWorkers(
                engine=runtime.engine,
                sessions=runtime.sessions,
                channels=channels,
                publisher=runtime.publisher,
                metrics=metrics,
                clock=clock,
                policy=RetryPolicy(
                    max_attempts=settings.webhook_max_attempts,
                    initial_s=settings.webhook_backoff_initial_s,
                    max_s=settings.webhook_backoff_max_s,
                    jitter_s=settings.webhook_backoff_jitter_s,
                ),
                live_workers=settings.live_workers,
                remote_workers=settings.remote_workers,
                queue_size=settings.queue_size,
                lease_s=settings.lease_s,
                live_lease_s=settings.live_lease_s,
                resume_interval_s=settings.resume_interval_s,
                service=settings.service_name,
            )
            # Workers stop after the consumer (the stack unwinds in reverse).
            await workers.start()
            stack.push_async_callback(workers.stop)

            notifier = Notifier(
                settings=settings,
                sessions=runtime.sessions,
                redis=runtime.redis,
                workers=workers,
                routing=Routing(
                    responder_channels=tuple(settings.responder_channels),
                    webhooks_enabled=secret is not None,
                    dispatcher_webhook_url=settings.dispatcher_webhook_url,
                    max_hooks_per_report=settings.webhook_max_per_report,
                ),
                hub=hub,
                limiter=RedisRateLimiter(runtime.redis, namespace="notification:ratelimit"),
                resolver=resolver,
                clock=clock,
                push=push_setup,
            )
            app.state.notifier = notifier
            revocations = await open_revocations(
                stack, app=app, redis=runtime.redis, settings=settings
            )
            await runtime.start_consumer(
                stack,
                topics=[INCIDENTS, RESPONDER_STATUS],
                handlers=revocation_handlers(revocations),
                batch_handlers=build_handlers(notifier),
            )
            yield

    configure_logging(settings.service_name, settings.log_level)
    app = build_app(
        settings=settings,
        title="Notification",
        description="Offers and updates to responders, reporters and dispatchers.",
        lifespan=lifespan,
        registry=registry,
    )
    app.state.clock = clock
    app.state.metrics = metrics
    app.include_router(router)
    app.include_router(push_router)
    return app
