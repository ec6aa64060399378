"""Rebuilding the index when Redis comes back empty or different.

The database is the truth for the registry and duty; it also keeps each responder's
last known position (:class:`PositionKeeper`, written at most every
``position_persist_interval_s`` per responder), so a rebuilt index can find responders
at once, before their next ping. Who is booked is dispatch's truth: after a rebuild the
locator asks for it (``BookingsResyncRequested``) and dispatch restates every booking.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Table
from sqlmodel import col, select

from services.volunteer_locator.context import Locator
from services.volunteer_locator.index import GeoIndex, PingRow, ts
from services.volunteer_locator.models import LastPosition
from services.volunteer_locator.service import sync_index
from shared.db import SessionFactory, upsert_insert
from shared.events import BookingsResyncRequested

log = logging.getLogger(__name__)

STARTUP = "startup"


class PositionKeeper:
    """Writes the newest indexed ping per responder to ``last_positions``, throttled."""

    def __init__(self, sessions: SessionFactory, *, interval_s: float, sqlite_db: bool) -> None:
        self._sessions = sessions
        self._interval_s = interval_s
        self._sqlite = sqlite_db
        self._written: dict[str, float] = {}

    async def keep(self, rows: Sequence[PingRow]) -> int:
        """Upsert the newest of ``rows`` per responder not written lately; returns how many."""
        now = time.monotonic()
        newest: dict[str, PingRow] = {}
        for row in rows:
            held = newest.get(row.responder_id)
            if held is None or row.recorded_at > held.recorded_at:
                newest[row.responder_id] = row
        due = [
            r
            for rid, r in newest.items()
            if now - self._written.get(rid, float("-inf")) >= self._interval_s
        ]
        if not due:
            return 0
        table: Table = LastPosition.__table__  # type: ignore[attr-defined]
        values = [
            {
                "responder_id": uuid.UUID(r.responder_id),
                "lat": r.lat,
                "lon": r.lon,
                "recorded_at": datetime.fromtimestamp(r.recorded_at, tz=UTC),
            }
            for r in due
        ]
        insert = upsert_insert(table, sqlite_db=self._sqlite).values(values)
        upsert = insert.on_conflict_do_update(
            index_elements=[table.c.responder_id],
            set_={
                "lat": insert.excluded.lat,
                "lon": insert.excluded.lon,
                "recorded_at": insert.excluded.recorded_at,
            },
            where=table.c.recorded_at < insert.excluded.recorded_at,
        )
        async with self._sessions() as session:
            await session.exec(upsert)
            await session.commit()
        for r in due:
            self._written[r.responder_id] = now
        return len(due)


async def restore_positions(
    *, sessions: SessionFactory, index: GeoIndex, now: datetime, chunk: int
) -> int:
    """Index every kept position (the stale ones are kept but not searchable)."""
    restored = 0
    last: uuid.UUID | None = None
    while True:
        query = select(LastPosition).order_by(col(LastPosition.responder_id)).limit(chunk)
        if last is not None:
            query = query.where(col(LastPosition.responder_id) > last)
        async with sessions() as session:
            rows = list((await session.exec(query)).all())
        if not rows:
            return restored
        outcomes = await index.ingest(
            [
                PingRow(
                    responder_id=str(p.responder_id),
                    lat=p.lat,
                    lon=p.lon,
                    recorded_at=ts(p.recorded_at),
                )
                for p in rows
            ],
            now=now,
        )
        restored += sum(1 for o in outcomes if o == 1)
        last = rows[-1].responder_id


async def rebuild_index(*, locator: Locator, reason: str) -> None:
    """Registry, duty and last known positions from the database, then ask dispatch to
    restate who is booked."""
    chunk = locator.settings.sync_chunk
    synced = await sync_index(sessions=locator.sessions, index=locator.index, chunk=chunk)
    placed = await restore_positions(
        sessions=locator.sessions, index=locator.index, now=locator.clock.now(), chunk=chunk
    )
    if reason == STARTUP:
        # Dispatch restates its bookings at its own start and periodically anyway.
        log.info("index synced at start: %d responders, %d positions", synced, placed)
        return
    async with locator.work.begin(now=locator.clock.now()) as uow:
        await uow.stage(BookingsResyncRequested(reason=reason))
    locator.metrics.redis_rebuilds.labels(reason).inc()
    log.warning("index rebuilt (%s): %d responders, %d positions", reason, synced, placed)
