"""A service started while the broker is down stays up and not ready, and becomes
ready once the broker is up."""

from __future__ import annotations

import httpx

from services.dispatch.app import create_app
from services.dispatch.settings import DispatchSettings
from shared.kafka import ensure_topics
from tests.harness import Infra, eventually, serve
from tools.embedded import Component, free_port, start_broker


async def test_not_ready_without_the_broker_then_ready_when_it_comes(
    redis_server: Component, tmp_path: object
) -> None:
    port = free_port()
    infra = Infra(kafka=f"127.0.0.1:{port}", redis_url=redis_server.url, tmp=str(tmp_path))
    app = create_app(infra.settings(DispatchSettings, "dispatch"))
    broker: Component | None = None
    try:
        async with (
            serve(app, wait_ready=False) as running,
            httpx.AsyncClient(base_url=running.base_url) as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["broker"] is False
            assert not_ready.json()["checks"]["redis"] is True

            broker = start_broker(port, log_dir=tmp_path)  # type: ignore[arg-type]
            await ensure_topics(broker.url)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=20, interval=0.2)
    finally:
        if broker is not None:
            broker.stop()
