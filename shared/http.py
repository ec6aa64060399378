"""What every service's HTTP app has: error shape, body limit, request metrics,
``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_body, install_error_handlers
from shared.security import SecurityHeaders
from shared.settings import ServiceSettings
from shared.streams import StreamLimiter

ReadinessCheck = Callable[[], Awaitable[bool]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HttpMetrics:
    """Request counts and latency, labelled by route template (never by id)."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        prefix = service.replace("-", "_")
        self.requests = Counter(
            f"{prefix}_http_requests_total",
            "HTTP requests served, by method, route and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class _BodyTooLarge(Exception):
    pass


class RequestGuard:
    """Refuses bodies over the limit with 413 and records request metrics."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: HttpMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        limit = self.max_body_bytes

        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            self._observe(scope, 413, started)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not status["sent"]:
                await self._too_large(send, limit)
            status["code"] = 413
        finally:
            self._observe(scope, int(status["code"]), started)

    @staticmethod
    async def _too_large(send: Send, limit: int) -> None:
        response = JSONResponse(
            error_body("payload_too_large", f"the body is larger than {limit} bytes"),
            status_code=413,
        )
        await response({"type": "http"}, _empty_receive, send)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


async def _not_yet() -> bool:
    return False


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


class Readiness(BaseModel):
    """The answer of ``/readyz``: overall status and each check's result."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]


def ops_router(registry: CollectorRegistry) -> APIRouter:
    """``/healthz`` (alive), ``/readyz`` (broker, Redis and database reachable) and ``/metrics``.

    The readiness checks are read from ``app.state.readiness``, which the lifespan sets.
    """
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        responses={
            200: {"model": Readiness, "description": "Every dependency answers"},
            503: {"model": Readiness, "description": "Some dependency does not answer"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        checks: Mapping[str, ReadinessCheck] = getattr(
            request.app.state, "readiness", {"startup": _not_yet}
        )
        names = list(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[n](), 3.0) for n in names), return_exceptions=True
        )
        status = {n: (r is True) for n, r in zip(names, results, strict=True)}
        ready = all(status.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": status},
            status_code=200 if ready else 503,
        )

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


# The collector's first generation runs after this many new container objects (the
# interpreter's default is 700): a service allocates far more per request or event than
# it keeps, and a pass every 700 showed as a sixth of notification's CPU under load.
GC_YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once started: move everything allocated so far out of the collector's sight
    (``gc.freeze``), so later passes only look at what came after, and let the youngest
    generation grow before it is collected."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def build_app(
    *,
    settings: ServiceSettings,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    registry: CollectorRegistry,
) -> FastAPI:
    """The common FastAPI shell: error handlers, limits, metrics, CORS and security headers.
    The heap is settled (:func:`settle_heap`) once ``lifespan`` has started the service."""

    @asynccontextmanager
    async def started_then_settled(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            settle_heap()
            yield

    app = FastAPI(
        title=title, description=description, version="1.0.0", lifespan=started_then_settled
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.stream_limiter = StreamLimiter(
        max_per_caller=settings.max_streams_per_caller,
        retry_after_s=settings.stream_retry_after_s,
    )
    install_error_handlers(app)
    app.include_router(ops_router(registry))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        metrics=HttpMetrics(settings.service_name, registry),
    )
    # Outermost, so every answer (a 413 or an error included) carries the headers.
    app.add_middleware(
        SecurityHeaders,
        docs_paths=(
            app.docs_url or "",
            app.redoc_url or "",
            app.swagger_ui_oauth2_redirect_url or "",
        ),
    )
    return app


def client_address(request: Request) -> str:
    """The caller's address as the server saw it."""
    return request.client.host if request.client else "unknown"


def self_contained_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with every ``$defs`` reference inlined.

    For ``openapi_extra`` bodies: FastAPI does not lift their ``$defs`` into the
    document's components, so a ``#/$defs/...`` reference there would not resolve.
    """
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                merged = {
                    **defs[ref.removeprefix("#/$defs/")],
                    **{k: v for k, v in node.items() if k != "$ref"},
                }
                return inline(merged)
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined
