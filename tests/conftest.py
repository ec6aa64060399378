"""Fixtures that start real components. Each test gets its own broker and Redis
(they start in milliseconds), so no test sees another's events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.kafka import ensure_topics
from tests.harness import Infra
from tools.embedded import Component, free_port, start_broker, start_postgres, start_redis


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Component]:
    """A fresh Kafka-protocol broker."""
    component = start_broker(free_port(), log_dir=tmp_path)
    yield component
    component.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Component]:
    """A fresh Redis."""
    component = start_redis(free_port(), workdir=tmp_path / "redis")
    yield component
    component.stop()


@pytest.fixture
async def infra(broker: Component, redis_server: Component, tmp_path: Path) -> Infra:
    """A broker with the topics created, and Redis."""
    await ensure_topics(broker.url)
    return Infra(kafka=broker.url, redis_url=redis_server.url, tmp=str(tmp_path))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Component]:
    """A throwaway PostgreSQL cluster for the whole session."""
    component = start_postgres(free_port())
    yield component
    component.stop()
