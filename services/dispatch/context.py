"""Dispatch's context: everything its commands, handlers and routes need, wired once in
``create_app`` (or a test)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import col, func, select

from services.dispatch.domain import OpenIncidentView, ResponsePlan
from services.dispatch.feed import QueueFeed
from services.dispatch.grids import GridIndex
from services.dispatch.locator_client import Locator
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import Incident
from services.dispatch.settings import DispatchSettings
from shared.clock import Clock, utc
from shared.db import SessionFactory

if TYPE_CHECKING:
    # The team routes depend on this context, so their proxy is named for type checks only.
    from services.dispatch.team import TeamProxy

log = logging.getLogger(__name__)


def _noop() -> None:
    return None


def _noop_wake(_due_at: datetime) -> None:
    return None


def _noop_reason(_reason: str) -> None:
    return None


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[uuid.UUID, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: uuid.UUID) -> AsyncIterator[None]:
        """Hold the key's lock for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class Dispatch:
    """Everything the engine's commands need, wired once in ``create_app`` (or a test)."""

    settings: DispatchSettings
    sessions: SessionFactory
    locator: Locator
    clock: Clock
    plans: Mapping[str, ResponsePlan]
    grids: GridIndex
    metrics: DispatchMetrics
    feed: QueueFeed
    sqlite: bool = True
    # The categories' names in each language, for the console and the apps.
    category_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # The console's team page asks the locator's registry routes through this.
    team: TeamProxy | None = None
    kick_relay: Callable[[], None] = _noop
    wake_timers: Callable[[datetime], None] = _noop_wake
    # Someone came on duty or freed up: retry the incidents waiting for a responder.
    retry_soon: Callable[[], None] = _noop
    # The locator rebuilt its index: restate who is booked (service/bookings.py).
    reconcile_soon: Callable[[str], None] = _noop_reason
    incident_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Reports are handled a partition at a time side by side; the check for an open
    # duplicate and the opening of a new incident must not interleave between them.
    opening_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # New incidents whose responders are being claimed, by id: a report at the same spot
    # meanwhile waits for it (and joins it) instead of claiming for a duplicate.
    openings: dict[uuid.UUID, tuple[OpenIncidentView, asyncio.Event]] = field(default_factory=dict)
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _gauge_refresh: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def incident_lock(self, incident_id: uuid.UUID) -> AbstractAsyncContextManager[None]:
        """Serialise the work on one incident inside this instance (claims included)."""
        return self.incident_locks.hold(incident_id)

    async def gauges_changed(self) -> None:
        """An incident opened or closed: refresh the gauges now, or once within
        ``gauge_refresh_s`` for this change and any that follow it."""
        delay = self.settings.gauge_refresh_s
        if delay <= 0:
            await self.refresh_gauges()
        elif self._gauge_refresh is None or self._gauge_refresh.done():
            self._gauge_refresh = asyncio.create_task(self._refresh_gauges_after(delay))

    async def _refresh_gauges_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.refresh_gauges()
        except Exception:  # the next change or the retry beat refreshes them
            log.warning("refreshing the open-incident gauges failed", exc_info=True)

    async def refresh_gauges(self) -> None:
        """Open incidents and the age of the oldest."""
        async with self.sessions() as s:
            count, oldest = (
                await s.exec(
                    select(func.count(), func.min(Incident.received_at)).where(
                        col(Incident.status) == "open"
                    )
                )
            ).one()
        self.metrics.open_incidents.set(count or 0)
        if isinstance(oldest, str):  # min() skips the column type on SQLite
            oldest = datetime.fromisoformat(oldest)
        age = (self.clock.now() - utc(oldest)).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest_open_age.set(max(age, 0.0))

    def write_lock(self) -> AbstractAsyncContextManager[Any]:
        """SQLite allows one writer and reads outside a write see no locks, so in-process
        writes queue here; PostgreSQL relies on row locks (SELECT ... FOR UPDATE)."""
        return self._write_lock if self.sqlite else nullcontext()
