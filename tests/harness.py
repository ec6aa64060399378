"""The test harness: real components on free loopback ports, and helpers to run a
service in-process and to read topics.

A test that needs a component and cannot get one fails loudly: nothing here skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from redis.asyncio import Redis

from shared.events import Envelope
from shared.settings import ServiceSettings
from tools.devstack import ROOT
from tools.embedded import free_port

# The browser tests' screenshots go to test-output/; with UPDATE_SCREENSHOTS=1
# (`make screenshots`) the ones the docs show are written into docs/ instead.
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
DOCS_SHOTS = ROOT / ("docs" if UPDATE_SCREENSHOTS else "test-output") / "screenshots"
TEST_SERVICE_AREA = Path(__file__).parent / "data" / "service_area.geojson"
AUTH_SECRET = "test-secret-that-is-long-enough-0123456789"
# What an e2e stack of the test city needs: the tests' secret and their service area.
E2E_ENV = {"AUTH_SECRET": AUTH_SECRET, "SERVICE_AREA_GEOJSON": str(TEST_SERVICE_AREA)}
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


@dataclass(frozen=True)
class Infra:
    """Where the real broker, Redis and database of a test session listen."""

    kafka: str
    redis_url: str
    tmp: str

    async def flush_redis(self) -> None:
        """Empty Redis, as a restart that lost everything leaves it for every service."""
        redis = Redis.from_url(self.redis_url)
        try:
            await redis.flushall()
        finally:
            await redis.aclose()

    def sqlite_url(self, name: str) -> str:
        """A fresh SQLite file for one service instance."""
        return f"sqlite+aiosqlite:///{self.tmp}/{name}-{uuid.uuid4().hex[:8]}.db"

    def settings(self, cls: type[SettingsT], name: str, **overrides: Any) -> SettingsT:
        """Settings for one service instance wired to this session's components."""
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.kafka,
            "redis_url": self.redis_url,
            "database_url": self.sqlite_url(name),
            "auth_secret": AUTH_SECRET,
            "kafka_session_timeout_ms": 3_000,
            "kafka_heartbeat_interval_ms": 500,
            # Intake's service area covers the test city (other services ignore it).
            "service_area_geojson": str(TEST_SERVICE_AREA),
        }
        values.update(overrides)
        return cls.model_validate(values)

    def redis_db_url(self, db: int) -> str:
        """A Redis URL on a given logical database."""
        return self.redis_url.rsplit("/", 1)[0] + f"/{db}"


@dataclass
class RunningApp:
    """A service app served by uvicorn in the test's event loop."""

    app: FastAPI
    base_url: str
    server: uvicorn.Server

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for this app, optionally with a bearer token."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10, **kwargs)


@asynccontextmanager
async def serve(
    app: FastAPI, *, ready_timeout: float = 30, wait_ready: bool = True
) -> AsyncIterator[RunningApp]:
    """Serve ``app`` on a free port until the block ends; waits for ``/readyz`` (or only
    ``/healthz`` when ``wait_ready`` is false)."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
            deadline = asyncio.get_running_loop().time() + ready_timeout
            while True:
                if task.done():
                    task.result()
                    raise RuntimeError("the app stopped while starting")
                with contextlib.suppress(httpx.HTTPError):
                    probe = "/readyz" if wait_ready else "/healthz"
                    if (await client.get(probe)).status_code == 200:
                        break
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"app not ready within {ready_timeout}s")
                await asyncio.sleep(0.05)
        yield RunningApp(app=app, base_url=base_url, server=server)
    finally:
        server.should_exit = True
        # A slow shutdown on a loaded machine is not what any test is about.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 30)


class TopicReader:
    """Reads every envelope on a topic from the beginning, for assertions."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic

    async def read_all(self, *, settle_s: float = 0.5) -> list[Envelope]:
        """Everything on the topic now (waits ``settle_s`` for stragglers)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: list[Envelope] = []
            deadline = asyncio.get_running_loop().time() + settle_s + 10
            while [tp for tp in tps if (await consumer.position(tp)) < end[tp]]:
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    out.extend(Envelope.from_bytes(r.value) for r in records)
                if asyncio.get_running_loop().time() > deadline:
                    break
            return out
        finally:
            await consumer.stop()

    async def wait_for(
        self,
        predicate: Callable[[Envelope], bool],
        *,
        timeout: float = 10,
        count: int = 1,
    ) -> list[Envelope]:
        """Wait until at least ``count`` envelopes match ``predicate``; return the matches."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            matches = [e for e in await self.read_all(settle_s=0) if predicate(e)]
            if len(matches) >= count:
                return matches
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"only {len(matches)} of {count} matching events on {self.topic} "
                    f"after {timeout}s"
                )
            await asyncio.sleep(0.1)


async def eventually(
    check: Callable[[], Any], *, timeout: float = 10, interval: float = 0.05
) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
