"""The infrastructure every service opens in its lifespan, in one place.

A service's ``create_app`` calls :func:`open_runtime` inside its lifespan's
``AsyncExitStack``; everything opened here is closed in reverse order when the
app stops. Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import db
from shared import redis as redis_helpers
from shared.broker_epoch import BrokerEpochWatch
from shared.events import Event
from shared.http import ReadinessCheck
from shared.kafka import (
    BatchHandler,
    ConsumerMetrics,
    EventConsumer,
    Handler,
    KafkaPublisher,
    Publisher,
    RawLane,
    consumers_healthy,
)
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.uow import UnitsOfWork


@dataclass
class Runtime:
    """The open connections of one service instance."""

    settings: ServiceSettings
    registry: CollectorRegistry
    engine: AsyncEngine
    sessions: db.SessionFactory
    redis: Redis
    publisher: KafkaPublisher
    relay: OutboxRelay | None = None
    outbox: Table | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    _consumer_metrics: ConsumerMetrics | None = None

    def units_of_work(self) -> UnitsOfWork:
        """Units of work on this service's outbox, waking its relay after each commit."""
        if self.outbox is None:
            raise RuntimeError("this service has no outbox")
        return UnitsOfWork(
            self.sessions, self.outbox, self.relay.kick if self.relay else lambda: None
        )

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        """Ready only when the broker, Redis and the database all answer and no consume
        loop is down (recovering from a failure)."""
        return {
            "broker": self.publisher.ping,
            "redis": lambda: redis_helpers.ping(self.redis),
            "database": lambda: db.ping(self.engine),
            "consumers": consumers_healthy(self.consumers),
        }

    async def start_consumer(
        self,
        stack: AsyncExitStack,
        *,
        topics: Sequence[str],
        handlers: Mapping[type[Event], Handler],
        batch_handlers: Mapping[type[Event], BatchHandler] | None = None,
        raw_lanes: Mapping[str, RawLane] | None = None,
        naturally_idempotent: frozenset[type[Event]] = frozenset(),
        group_id: str | None = None,
        publisher: Publisher | None = None,
        max_records: int = 500,
        auto_offset_reset: str = "earliest",
        concurrent_partitions: bool = False,
        background: bool = False,
    ) -> EventConsumer:
        """Start a consume loop in this service's group; it stops with the app.

        A ``background`` consumer (its events are not on a report's way to an offer)
        waits ``KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS`` on an empty fetch instead of
        ``KAFKA_FETCH_MAX_WAIT_MS``, so it polls the broker less often."""
        if self._consumer_metrics is None:
            self._consumer_metrics = ConsumerMetrics(self.settings.service_name, self.registry)
        consumer = EventConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=group_id or self.settings.consumer_group,
            topics=topics,
            handlers=handlers,
            batch_handlers=batch_handlers or {},
            raw_lanes=raw_lanes or {},
            naturally_idempotent=naturally_idempotent,
            dedupe=redis_helpers.RedisDedupeStore(
                self.redis,
                namespace=f"{self.settings.service_name}:{group_id or 'main'}",
                ttl_s=self.settings.dedupe_ttl_s,
            ),
            publisher=publisher or self.publisher,
            metrics=self._consumer_metrics,
            fetch_max_wait_ms=self.settings.kafka_background_fetch_max_wait_ms
            if background
            else self.settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            max_records=max_records,
            auto_offset_reset=auto_offset_reset,
            concurrent_partitions=concurrent_partitions,
            broker_epoch=BrokerEpochWatch(
                self.settings.kafka_bootstrap_servers,
                service=f"{self.settings.service_name}.{group_id or 'main'}",
                check_every_s=self.settings.broker_epoch_check_s,
            )
            if self.settings.broker_epoch_check_s > 0
            else None,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        self.consumers.append(consumer)
        return consumer


async def open_runtime(
    stack: AsyncExitStack,
    settings: ServiceSettings,
    *,
    registry: CollectorRegistry,
    metadata: MetaData,
    outbox: Table | None = None,
    create_tables: bool = True,
) -> Runtime:
    """Open the database, Redis and the producer (and the outbox relay, if the service has one)."""
    schema = settings.schema_name
    engine = db.create_engine(settings.database_url, schema=schema)
    stack.push_async_callback(engine.dispose)
    if create_tables:
        await db.create_schema(engine, metadata, schema=schema)

    redis = redis_helpers.create_redis(settings.redis_url)
    stack.push_async_callback(redis.aclose)

    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id=settings.service_name)
    await publisher.start()
    stack.push_async_callback(publisher.stop)

    runtime = Runtime(
        settings=settings,
        registry=registry,
        engine=engine,
        sessions=db.session_factory(engine),
        redis=redis,
        publisher=publisher,
        outbox=outbox,
    )
    if outbox is not None:
        relay = OutboxRelay(
            engine=engine,
            table=outbox,
            publisher=publisher,
            service=settings.service_name,
            registry=registry,
            poll_interval_s=settings.outbox_poll_interval_s,
            retention_s=settings.outbox_retention_s,
            broker_epoch=BrokerEpochWatch(
                settings.kafka_bootstrap_servers,
                service=settings.service_name,
                check_every_s=settings.broker_epoch_check_s,
            )
            if settings.broker_epoch_check_s > 0
            else None,
        )
        await relay.start()
        stack.push_async_callback(relay.stop)
        runtime.relay = relay
    return runtime
