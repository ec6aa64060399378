"""Kafka for the services: the producer (``shared.producer``) and the one consume loop
(``shared.consumer``), importable from here as one module."""

from __future__ import annotations

from shared.consumer import (
    BatchHandler,
    DedupeStore,
    EventConsumer,
    Handler,
    MemoryDedupeStore,
    RawBatchHandler,
    RawLane,
    consumers_healthy,
)
from shared.consumer_metrics import ConsumerMetrics
from shared.producer import (
    BrokerUnavailable,
    EncodedPublisher,
    KafkaPublisher,
    Publisher,
    ensure_topics,
    publish_event,
)

__all__ = [
    "BatchHandler",
    "BrokerUnavailable",
    "ConsumerMetrics",
    "DedupeStore",
    "EncodedPublisher",
    "EventConsumer",
    "Handler",
    "KafkaPublisher",
    "MemoryDedupeStore",
    "Publisher",
    "RawBatchHandler",
    "RawLane",
    "consumers_healthy",
    "ensure_topics",
    "publish_event",
]
