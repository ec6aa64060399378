"""Volunteer-locator's event handlers: routing is data.

Pings arrive in runs and are indexed in one Lua call per run. Status events keep the
index true: duty puts a responder in or out, dispatch's bookings make them busy or free.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import orjson

from services.volunteer_locator.context import Locator
from services.volunteer_locator.index import AttributesRow, PingRow, ts
from shared.events import (
    RESPONDER_LOCATIONS,
    AvailabilityChanged,
    BookingsReconciled,
    DutyChanged,
    Envelope,
    Event,
    LocationReported,
    ResponderRegistered,
    ResponderUpdated,
)
from shared.handlers import (
    ContextBatchHandler,
    ContextHandler,
    bind_batch_handlers,
    bind_handlers,
)
from shared.kafka import BatchHandler, Handler, RawLane

log = logging.getLogger(__name__)

_OUTCOMES = {1: "indexed", 0: "out_of_order", -1: "unknown_responder"}


async def index_locations(
    batch: Sequence[tuple[LocationReported, Envelope]], locator: Locator
) -> None:
    """Index a run of pings; a ping older than the one held is ignored."""
    pings = [event for event, _ in batch]
    rows = [
        PingRow(
            responder_id=str(p.responder_id),
            lat=p.lat,
            lon=p.lon,
            recorded_at=ts(p.recorded_at),
        )
        for p in pings
    ]
    await _index(rows, locator=locator)


async def index_location_bytes(values: Sequence[bytes], *, locator: Locator) -> list[int]:
    """Index a partition's pings straight from their bytes (the raw lane: the locator built
    and validated every one, ``wire.py``); returns the positions it could not decode."""
    rows: list[PingRow] = []
    bad: list[int] = []
    for i, value in enumerate(values):
        try:
            document = orjson.loads(value)
            if document["type"] != LocationReported.__name__:
                bad.append(i)
                continue
            payload = document["payload"]
            rows.append(
                PingRow(
                    responder_id=str(payload["responder_id"]),
                    lat=float(payload["lat"]),
                    lon=float(payload["lon"]),
                    recorded_at=datetime.fromisoformat(payload["recorded_at"]).timestamp(),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad.append(i)
    if rows:
        await _index(rows, locator=locator)
    return bad


async def _index(rows: Sequence[PingRow], *, locator: Locator) -> None:
    outcomes = await locator.index.ingest(rows, now=locator.clock.now())
    indexed_at = time.time()
    counts: dict[int, int] = {}
    for row, outcome in zip(rows, outcomes, strict=True):
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == 1:
            locator.metrics.ping_lag.observe(max(0.0, indexed_at - row.recorded_at))
    for outcome, n in counts.items():
        locator.metrics.pings.labels(_OUTCOMES[outcome]).inc(n)
    if counts.get(-1):
        locator.redis_lost()
    await locator.keep_positions([r for r, o in zip(rows, outcomes, strict=True) if o == 1])


async def on_registered(event: ResponderRegistered, envelope: Envelope, locator: Locator) -> None:
    """Cache a new responder's attributes (the API usually has already)."""
    await locator.index.upsert(
        [
            AttributesRow(
                responder_id=str(event.responder_id),
                kind=event.kind,
                skills=event.skills,
                travel_mode=event.travel_mode,
                on_duty=False,
                duty_ts=ts(envelope.occurred_at),
            )
        ]
    )


async def on_updated(event: ResponderUpdated, envelope: Envelope, locator: Locator) -> None:
    """Cache an edited responder's attributes; the duty state it carries wins only if newer."""
    await locator.index.upsert(
        [
            AttributesRow(
                responder_id=str(event.responder_id),
                kind=event.kind,
                skills=event.skills,
                travel_mode=event.travel_mode,
                on_duty=event.on_duty,
                duty_ts=ts(event.duty_changed_at),
            )
        ]
    )


async def on_duty_changed(event: DutyChanged, envelope: Envelope, locator: Locator) -> None:
    """Put the responder in or out of the index, unless a newer duty state is held."""
    await locator.index.set_duty(
        responder_id=str(event.responder_id),
        on_duty=event.on_duty,
        duty_ts=ts(envelope.occurred_at),
    )


async def on_availability_changed(
    event: AvailabilityChanged, envelope: Envelope, locator: Locator
) -> None:
    """Dispatch booked (busy) or freed a responder; a late ``free`` never frees a newer hold."""
    responder_id = str(event.responder_id)
    if event.incident_id is None:
        log.warning("AvailabilityChanged without an incident; ignored")
        return
    incident_id = str(event.incident_id)
    if event.status == "busy":
        await locator.index.mark_busy(responder_id=responder_id, incident_id=incident_id)
    elif event.status == "free":
        await locator.index.release(responder_id=responder_id, incident_id=incident_id)


async def on_bookings_reconciled(
    event: BookingsReconciled, envelope: Envelope, locator: Locator
) -> None:
    """Dispatch listed who it holds booked: a booking it no longer lists lapses after the
    grace (each listed one also comes as ``AvailabilityChanged busy``)."""
    deadline = locator.clock.now() + timedelta(seconds=event.grace_s)
    suspected = await locator.index.suspect(
        keep=[str(r) for r in event.responder_ids], deadline=deadline
    )
    if suspected:
        log.warning("%d bookings dispatch no longer lists will lapse unless restated", suspected)


HANDLERS: Mapping[type[Event], ContextHandler[Locator]] = {
    ResponderRegistered: on_registered,
    ResponderUpdated: on_updated,
    DutyChanged: on_duty_changed,
    AvailabilityChanged: on_availability_changed,
    BookingsReconciled: on_bookings_reconciled,
}

# Pings are handled in runs.
BATCH_HANDLERS: Mapping[type[Event], ContextBatchHandler[Locator]] = {
    LocationReported: index_locations,
}


def build_handlers(locator: Locator) -> dict[type[Event], Handler]:
    """The status topic's routing table, bound to this instance's context."""
    return bind_handlers(HANDLERS, locator)


def build_batch_handlers(locator: Locator) -> dict[type[Event], BatchHandler]:
    """The locations topic's routing table, bound to this instance's context."""
    return bind_batch_handlers(BATCH_HANDLERS, locator)


def build_raw_lanes(locator: Locator) -> dict[str, RawLane]:
    """The locations topic read as bytes: no pydantic per ping on the way to the index."""
    return {
        RESPONDER_LOCATIONS: RawLane(
            LocationReported.__name__,
            functools.partial(index_location_bytes, locator=locator),
        )
    }
