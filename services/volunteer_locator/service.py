"""Volunteer-locator's commands and queries: plain functions with keyword arguments."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import func
from sqlmodel import col, select

from services.volunteer_locator.context import Locator
from services.volunteer_locator.eta import find_nearest_grouped
from services.volunteer_locator.geo import Point
from services.volunteer_locator.index import AttributesRow, GeoIndex, groups_of, ts
from services.volunteer_locator.models import (
    BatchPing,
    NearestResponder,
    PingIn,
    Position,
    Responder,
    ResponderCreate,
    ResponderOnMap,
    ResponderPublic,
    ResponderUpdate,
)
from services.volunteer_locator.wire import location_envelopes
from shared.db import SessionFactory
from shared.errors import Invalid, NotFound, Unavailable
from shared.events import (
    RESPONDER_LOCATIONS,
    Availability,
    DutyChanged,
    Envelope,
    ResponderKind,
    ResponderRegistered,
    ResponderRevoked,
    ResponderUpdated,
)
from shared.kafka import BrokerUnavailable, EncodedPublisher, Publisher
from shared.responders import KINDS
from shared.tasks import cancel
from shared.uow import UnitsOfWork

log = logging.getLogger(__name__)


def attributes_of(responder: Responder) -> AttributesRow:
    """What the index caches about a responder."""
    return AttributesRow(
        responder_id=str(responder.id),
        kind=responder.kind,
        skills=responder.skills,
        travel_mode=responder.travel_mode,
        on_duty=responder.on_duty,
        duty_ts=ts(responder.duty_changed_at),
    )


# --- registry -----------------------------------------------------------------


async def register_responder(
    *,
    work: UnitsOfWork,
    index: GeoIndex,
    body: ResponderCreate,
    now: datetime,
) -> Responder:
    """Save a responder (off duty) and stage ResponderRegistered in the same transaction."""
    responder = Responder(
        name=body.name,
        kind=body.kind,
        skills=sorted(set(body.skills)),
        travel_mode=body.travel_mode,
        office=body.office,
        grid=body.grid,
        phone=body.phone,
        on_duty=False,
        duty_changed_at=now,
        registered_at=now,
    )
    async with work.begin(now=now) as uow:
        uow.session.add(responder)
        await uow.stage(
            ResponderRegistered(
                responder_id=responder.id,
                kind=body.kind,
                skills=tuple(responder.skills),
                travel_mode=body.travel_mode,
                office=body.office,
                grid=body.grid,
            ),
        )
    # The consumer also applies the event; writing now means pings are indexed at once.
    await index.upsert([attributes_of(responder)])
    return responder


async def update_responder(
    *,
    work: UnitsOfWork,
    index: GeoIndex,
    responder_id: uuid.UUID,
    body: ResponderUpdate,
    now: datetime,
) -> Responder:
    """Apply a dispatcher's edit and stage ResponderUpdated when the index's attributes or
    the responder's office or grid changed (a new name or phone concerns nobody else)."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name", "") is None or ("skills" in changes and changes["skills"] is None):
        raise Invalid("name and skills cannot be cleared")
    if "travel_mode" in changes and changes["travel_mode"] is None:
        raise Invalid("travel_mode cannot be cleared")
    if "skills" in changes:
        changes["skills"] = sorted(set(changes["skills"]))
    async with work.begin(now=now) as uow:
        responder = await uow.session.get(Responder, responder_id, with_for_update=True)
        if responder is None:
            raise NotFound("no such responder")
        shared_before = _shared_attributes(responder)
        for name, value in changes.items():
            setattr(responder, name, value)
        uow.session.add(responder)
        if _shared_attributes(responder) != shared_before:
            await uow.stage(
                ResponderUpdated(
                    responder_id=responder.id,
                    kind=responder.kind,
                    skills=tuple(responder.skills),
                    travel_mode=responder.travel_mode,
                    office=responder.office,
                    grid=responder.grid,
                    on_duty=responder.on_duty,
                    duty_changed_at=responder.duty_changed_at,
                )
            )
    # This instance's index at once; other replicas follow the event.
    await index.upsert([attributes_of(responder)])
    return responder


def _shared_attributes(responder: Responder) -> tuple[object, ...]:
    return (
        tuple(responder.skills),
        responder.travel_mode,
        responder.office,
        responder.grid,
    )


async def _load(sessions: SessionFactory, responder_id: uuid.UUID) -> Responder:
    async with sessions() as session:
        responder = await session.get(Responder, responder_id)
    if responder is None:
        raise NotFound("no such responder")
    return responder


async def set_duty(
    *,
    work: UnitsOfWork,
    index: GeoIndex,
    responder_id: uuid.UUID,
    on_duty: bool,
    now: datetime,
) -> Responder:
    """Put a responder on or off duty and stage DutyChanged; a repeat changes nothing."""
    async with work.begin(now=now) as uow:
        session = uow.session
        responder = await session.get(Responder, responder_id, with_for_update=True)
        if responder is None:
            raise NotFound("no such responder")
        if responder.on_duty == on_duty:
            return responder
        responder.on_duty = on_duty
        responder.duty_changed_at = now
        session.add(responder)
        await uow.stage(
            DutyChanged(responder_id=responder.id, on_duty=on_duty, kind=responder.kind)
        )
    # Off duty must leave the index at once; the event's copy is applied only if newer.
    await index.set_duty(responder_id=str(responder_id), on_duty=on_duty, duty_ts=ts(now))
    return responder


async def revoke_responder(
    *,
    work: UnitsOfWork,
    index: GeoIndex,
    responder_id: uuid.UUID,
    revoked_at: datetime,
    now: datetime,
) -> Responder:
    """Take a responder off duty and stage ResponderRevoked (and DutyChanged) with it.

    ``revoked_at`` is wall-clock time, the scale of the tokens' ``iat``; ``now`` is the
    locator's clock, the scale of duty changes in the index.
    """
    async with work.begin(now=now) as uow:
        responder = await uow.session.get(Responder, responder_id, with_for_update=True)
        if responder is None:
            raise NotFound("no such responder")
        if responder.on_duty:
            responder.on_duty = False
            responder.duty_changed_at = now
            uow.session.add(responder)
            await uow.stage(
                DutyChanged(responder_id=responder.id, on_duty=False, kind=responder.kind)
            )
        await uow.stage(ResponderRevoked(responder_id=responder.id, revoked_at=revoked_at))
    # Out of the geo index at once, not when the event comes back.
    await index.set_duty(responder_id=str(responder_id), on_duty=False, duty_ts=ts(now))
    await index.mark_revoked(responder_id=str(responder_id))
    return responder


async def get_responder(
    *, sessions: SessionFactory, index: GeoIndex, responder_id: uuid.UUID
) -> ResponderPublic:
    """A responder with their live status and newest position."""
    responder = await _load(sessions, responder_id)
    live = await index.live(str(responder_id))
    position = None
    if live.position is not None and live.last_seen is not None:
        position = Position(
            lat=live.position.lat,
            lon=live.position.lon,
            recorded_at=datetime.fromtimestamp(live.last_seen, tz=responder.registered_at.tzinfo),
        )
    return ResponderPublic(
        responder_id=responder.id,
        name=responder.name,
        kind=responder.kind,
        skills=responder.skills,
        travel_mode=responder.travel_mode,
        office=responder.office,
        grid=responder.grid,
        phone=responder.phone,
        on_duty=responder.on_duty,
        status=cast(Availability | None, live.status),
        position=position,
        registered_at=responder.registered_at,
    )


async def responders_on_map(
    *,
    sessions: SessionFactory,
    index: GeoIndex,
    on_duty: bool | None,
    kinds: Collection[str],
    statuses: Collection[str],
    limit: int,
) -> list[ResponderOnMap]:
    """Responders with their live status and newest position, for the console's map.

    The registry filters duty and kind; the index knows status, so responders are read in
    id order, chunk by chunk, until ``limit`` pass the status filter.
    """
    out: list[ResponderOnMap] = []
    last: uuid.UUID | None = None
    chunk = min(max(limit, 500), 5000)
    while len(out) < limit:
        query = select(Responder).order_by(col(Responder.id)).limit(chunk)
        if on_duty is not None:
            query = query.where(col(Responder.on_duty).is_(on_duty))
        if kinds:
            query = query.where(col(Responder.kind).in_(list(kinds)))
        if last is not None:
            query = query.where(col(Responder.id) > last)
        async with sessions() as session:
            rows = list((await session.exec(query)).all())
        if not rows:
            break
        last = rows[-1].id
        states = await index.live_many([str(r.id) for r in rows])
        for responder, live in zip(rows, states, strict=True):
            if statuses and live.status not in statuses:
                continue
            out.append(
                ResponderOnMap(
                    responder_id=responder.id,
                    kind=responder.kind,
                    name=responder.name,
                    skills=responder.skills,
                    travel_mode=responder.travel_mode,
                    on_duty=responder.on_duty,
                    office=responder.office,
                    grid=responder.grid,
                    status=cast(Availability | None, live.status),
                    lat=live.position.lat if live.position else None,
                    lon=live.position.lon if live.position else None,
                    last_seen_at=(
                        datetime.fromtimestamp(live.last_seen, tz=UTC)
                        if live.last_seen is not None
                        else None
                    ),
                )
            )
            if len(out) == limit:
                break
    return out


async def sync_index(*, sessions: SessionFactory, index: GeoIndex, chunk: int) -> int:
    """Cache every responder's attributes and duty in Redis (at startup: Redis may be new)."""
    synced = 0
    last: uuid.UUID | None = None
    while True:
        query = select(Responder).order_by(col(Responder.id)).limit(chunk)
        if last is not None:
            query = query.where(col(Responder.id) > last)
        async with sessions() as session:
            rows = list((await session.exec(query)).all())
        if not rows:
            return synced
        await index.upsert([attributes_of(r) for r in rows])
        synced += len(rows)
        last = rows[-1].id


async def on_duty_by_kind(*, sessions: SessionFactory) -> dict[str, int]:
    """How many responders of each kind are on duty."""
    query = (
        select(col(Responder.kind), func.count())
        .where(col(Responder.on_duty).is_(True))
        .group_by(Responder.kind)
    )
    async with sessions() as session:
        counts: dict[str, int] = {k: int(n) for k, n in (await session.exec(query)).all()}
    return {kind: counts.get(kind, 0) for kind in KINDS}


# --- location ingest ----------------------------------------------------------


async def report_locations(
    *,
    publisher: Publisher,
    pings: Sequence[tuple[uuid.UUID, PingIn]],
    now: datetime,
) -> int:
    """Publish a LocationReported per ping on ``responder-locations``; 503 without a broker."""
    try:
        if isinstance(publisher, EncodedPublisher):
            # The fast lane: envelopes as bytes, sent in per-partition batches.
            await publisher.publish_encoded(RESPONDER_LOCATIONS, location_envelopes(pings, now=now))
        else:
            await publisher.publish_many(
                [
                    (Envelope.from_bytes(value), RESPONDER_LOCATIONS, key.decode())
                    for key, value in location_envelopes(pings, now=now)
                ]
            )
    except BrokerUnavailable as exc:
        raise Unavailable("cannot take pings right now; retry", code="broker_unavailable") from exc
    return len(pings)


def batch_pairs(pings: Sequence[BatchPing]) -> list[tuple[uuid.UUID, PingIn]]:
    """A gateway's pings as (responder id, ping) pairs."""
    return [(p.responder_id, p) for p in pings]


# --- nearest and claims -------------------------------------------------------


async def nearest(
    *,
    locator: Locator,
    origin: Point,
    kinds: Collection[str],
    skills: Collection[str],
    exclude: Collection[str],
    limit: int,
) -> list[NearestResponder]:
    """The eligible responders with the smallest ETA to ``origin``."""
    started = time.perf_counter()
    result = await find_nearest_grouped(
        source=locator.index.at(locator.clock.now()),
        eta=locator.eta,
        origin=origin,
        groups=groups_of(kinds or KINDS),
        skills=skills,
        exclude=exclude,
        limit=limit,
        steps_m=locator.settings.search_steps_m,
    )
    locator.metrics.nearest_seconds.observe(time.perf_counter() - started)
    return [
        NearestResponder(
            responder_id=uuid.UUID(r.responder_id),
            kind=cast(ResponderKind, r.kind),
            distance_m=round(r.distance_m, 1),
            eta_s=round(r.eta_s, 1),
            status="free",
        )
        for r in result.ranked
    ]


async def sweep_once(*, locator: Locator) -> None:
    """Free lapsed holds and take newly stale responders out of the GEO keys."""
    now = locator.clock.now()
    expired = await locator.index.expire_holds(now=now)
    if expired:
        locator.metrics.claims.labels("expired").inc(expired)
    cutoff = locator.index.stale_cutoff(now)
    await locator.index.drop_stale(after=locator.stale_swept_until, until=cutoff)
    locator.stale_swept_until = cutoff


async def refresh_gauges(*, locator: Locator, sessions: SessionFactory) -> None:
    """Set the on-duty and available gauges by kind."""
    for kind, n in (await on_duty_by_kind(sessions=sessions)).items():
        locator.metrics.on_duty.labels(kind).set(n)
    for kind, n in (await locator.index.available_by_kind()).items():
        locator.metrics.available.labels(kind).set(n)


async def housekeeping(*, locator: Locator, sessions: SessionFactory) -> None:
    """Run the sweeper and the gauges until cancelled; a failure is logged, not fatal."""
    settings = locator.settings
    last_gauges = float("-inf")
    while True:
        try:
            await sweep_once(locator=locator)
            if time.monotonic() - last_gauges >= settings.gauge_interval_s:
                await refresh_gauges(locator=locator, sessions=sessions)
                last_gauges = time.monotonic()
        except Exception:
            log.exception("locator housekeeping failed; retrying")
        await asyncio.sleep(settings.sweep_interval_s)


@contextlib.asynccontextmanager
async def running_housekeeping(
    *, locator: Locator, sessions: SessionFactory
) -> AsyncIterator[None]:
    """Run :func:`housekeeping` in the background for the block."""
    task = asyncio.create_task(housekeeping(locator=locator, sessions=sessions), name="sweeper")
    try:
        yield
    finally:
        await cancel(task)
