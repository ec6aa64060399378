"""Noticing that the broker lost its topics, so that the outbox can publish again.

The embedded broker keeps topics in memory only: after a restart every topic is
empty and every consumer group's committed offsets are gone. Events a consumer had
not read yet are lost with it, unless someone publishes them again.

Each service keeps a marker topic of its own on the broker (``_epoch.<service>``).
The outbox relay looks for it every few seconds; when it has vanished, the broker
is not the one the service last talked to, and the relay republishes what it sent
recently. A broker that keeps its topics (production Kafka) never loses the marker,
so nothing is ever republished there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

MARKER_PREFIX = "_epoch."


def marker_topic(service: str) -> str:
    """The marker topic a service keeps on the broker."""
    return f"{MARKER_PREFIX}{service}"


class BrokerEpochWatch:
    """Tells whether the broker lost its topics, asking it at most once every
    ``check_every_s`` (or ``max_age_s``, when the caller is about to publish)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        service: str,
        check_every_s: float = 2.0,
        timeout_s: float = 3.0,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self.topic = marker_topic(service)
        self._check_every_s = check_every_s
        self._timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._checked_at: float | None = None
        self._disabled = False

    async def lost_topics(self, *, max_age_s: float | None = None) -> bool:
        """True once each time the marker topic is found missing (a new broker, or the
        first start on this broker), after which the marker exists again. False while
        the broker cannot be asked, or if it was asked less than ``max_age_s`` ago."""
        now = time.monotonic()
        age_s = self._check_every_s if max_age_s is None else max_age_s
        if self._disabled or (self._checked_at is not None and now - self._checked_at < age_s):
            return False
        try:
            admin = await self._client()
            topics = await asyncio.wait_for(admin.list_topics(), self._timeout_s)
            self._checked_at = now
            if self.topic in topics:
                return False
            with contextlib.suppress(TopicAlreadyExistsError):
                await asyncio.wait_for(
                    admin.create_topics([NewTopic(self.topic, 1, 1)]), self._timeout_s
                )
        except (KafkaError, OSError, TimeoutError) as exc:
            # Unanswered: ask again before the next publish, which must not reach a new
            # broker before this question has been answered.
            self._checked_at = None
            log.info("could not check the broker's topics (%r); trying again", exc)
            await self.close()
            return False
        except Exception:
            # A broker that refuses to let us create the marker (permissions): stop asking
            # rather than republishing on every check.
            log.exception("cannot keep %s on the broker; restart detection is off", self.topic)
            self._disabled = True
            await self.close()
            return False
        return True

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap_servers,
                request_timeout_ms=int(self._timeout_s * 1000),
            )
            try:
                await asyncio.wait_for(admin.start(), self._timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        """Close the admin connection (it is opened again at the next check)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), self._timeout_s)


class RewindAfterLoss(ConsumerRebalanceListener):  # type: ignore[misc]
    """Reads partitions assigned while ``rewinding()`` holds again from the start.

    After the broker lost its topics, the offsets its new incarnation holds for the group
    cannot be trusted: a batch read from the old broker and committed after the restart
    stores an old, high offset, and the group's next assignment would resume there,
    skipping whatever the new broker received below it. The dedupe store skips repeats.
    """

    def __init__(self, consumer: AIOKafkaConsumer, *, rewinding: Callable[[], bool]) -> None:
        self._consumer = consumer
        self._rewinding = rewinding

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Nothing to do: offsets are committed after each batch is handled."""

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Rewind what was assigned, while a broker loss is recent."""
        if assigned and self._rewinding():
            log.warning("partitions assigned after the broker lost its topics: reading again")
            read_from_start(self._consumer, assigned)


def read_from_start(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
    """Read ``partitions`` again from offset 0.

    Not ``seek_to_beginning``: the embedded broker answers "earliest" with the offset of
    the batch written first in time, which is not the lowest offset when two producers'
    writes to one partition finish out of order, and everything below it would be skipped.
    On Kafka, an offset 0 that retention has deleted is out of range, and the consumer
    resets to the earliest offset it still has."""
    for partition in partitions:
        consumer.seek(partition, 0)
