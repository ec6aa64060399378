"""The HTTP shell every service shares: error shape, body limit, readiness, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from shared.http import build_app
from shared.settings import ServiceSettings


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def _app(*, ready: bool) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def check() -> bool:
            return ready

        app.state.readiness = {"broker": check}
        yield

    settings = ServiceSettings(service_name="unit", auth_secret="x" * 32, max_body_bytes=1024)
    app = build_app(
        settings=settings,
        title="t",
        description="t",
        lifespan=lifespan,
        registry=CollectorRegistry(),
    )

    @app.post("/things", status_code=201)
    async def create(thing: Thing) -> Thing:
        return thing

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_bad_input_answers_in_the_one_error_shape() -> None:
    async with _client(_app(ready=True)) as client:
        unknown = await client.post("/things", json={"name": "a", "admin": True})
        missing = await client.post("/things", json={})
    assert unknown.status_code == 422
    body = unknown.json()["error"]
    assert body["code"] == "invalid_input"
    assert "admin" in body["message"]
    assert missing.json()["error"]["details"][0]["field"] == "name"


async def test_a_body_over_the_limit_gets_413() -> None:
    async with _client(_app(ready=True)) as client:
        answer = await client.post("/things", json={"name": "x" * 5000})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


async def test_unknown_routes_use_the_error_shape() -> None:
    async with _client(_app(ready=True)) as client:
        answer = await client.get("/nowhere")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_readiness_follows_the_checks_and_metrics_count_requests() -> None:
    app = _app(ready=False)
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        not_ready = await client.get("/readyz")
        await client.post("/things", json={"name": "a"})
        metrics = (await client.get("/metrics")).text
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"broker": False}
    assert 'unit_http_requests_total{method="POST",route="/things",status="201"} 1.0' in metrics
