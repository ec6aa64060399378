"""Claims: book the nearest eligible free responder (or a named one) for an incident, with
the decision trace when asked, and release them."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, cast

from services.volunteer_locator.context import Locator
from services.volunteer_locator.eta import SearchResult, find_nearest_grouped
from services.volunteer_locator.geo import Candidate, Point, haversine_m
from services.volunteer_locator.index import Claimed, groups_of
from services.volunteer_locator.trace import ClaimFilter, PassReason, pass_reason
from shared.claims import (
    ClaimGranted,
    ClaimRequest,
    ClaimTrace,
    PassedOver,
    ReleaseRequest,
    ReleaseResult,
    TracedCandidate,
    nobody_available,
    responder_not_free,
)
from shared.errors import DomainError, NotFound
from shared.events import (
    ResponderKind,
    TravelMode,
)
from shared.responders import KINDS

log = logging.getLogger(__name__)


async def claim(*, locator: Locator, request: ClaimRequest) -> ClaimGranted:
    """Find the nearest eligible free responder and book them for the incident, atomically."""
    started = time.perf_counter()
    try:
        granted = await _claim(locator=locator, request=request)
    except DomainError as exc:
        locator.metrics.claims.labels(
            "none_available" if isinstance(exc, NotFound) else "unavailable"
        ).inc()
        raise
    finally:
        locator.metrics.claim_seconds.observe(time.perf_counter() - started)
    locator.metrics.claims.labels("claimed").inc()
    return granted


async def _claim(*, locator: Locator, request: ClaimRequest) -> ClaimGranted:
    settings = locator.settings
    now = locator.clock.now()
    # A caller may ask for a shorter hold, never a longer one than the configured maximum.
    hold_s = min(request.hold_s or settings.claim_hold_s, settings.claim_hold_s)
    hold_until = now + timedelta(seconds=hold_s)
    origin = Point(lat=request.lat, lon=request.lon)
    incident = str(request.incident_id)

    if request.responder_id is not None:
        # A dispatcher's manual assignment: that responder, if on duty and free, whatever
        # the age of their last ping (the dispatcher may know better than the GPS).
        booked = await locator.index.claim(
            candidates=[str(request.responder_id)],
            incident_id=incident,
            hold_until=hold_until,
            fresh_after=0.0,
        )
        if booked is None:
            raise responder_not_free()
        distance_m = haversine_m(origin, booked.position)
        (eta_s,) = await locator.eta.estimate(
            origin=origin,
            candidates=[
                _candidate(booked.responder_id, booked.kind, booked.travel_mode, distance_m)
            ],
        )
        return ClaimGranted(
            responder_id=uuid.UUID(booked.responder_id),
            kind=cast(ResponderKind, booked.kind),
            travel_mode=cast(TravelMode, booked.travel_mode),
            distance_m=round(distance_m, 1),
            eta_s=round(eta_s, 1),
            radius_m=round(distance_m, 1),
            hold_s=hold_s,
        )

    tried = {str(r) for r in request.exclude}
    kinds: list[str] = list(request.kinds or KINDS)
    while True:
        # Rank the top few, then let Lua book the first still free; if others won them
        # meanwhile, search again without them. Each round removes at least one candidate.
        result = await find_nearest_grouped(
            source=locator.index.at(now),
            eta=locator.eta,
            origin=origin,
            groups=groups_of(kinds),
            skills=request.skills,
            exclude=tried,
            limit=settings.claim_candidates,
            steps_m=settings.search_steps_m,
        )
        if not result.ranked:
            raise nobody_available(radius_m=settings.search_steps_m[-1])
        booked, trace = await _book(
            locator=locator,
            request=request,
            result=result,
            hold_until=hold_until,
            fresh_after=locator.index.stale_cutoff(now),
            exclude=tried,
        )
        if booked is not None:
            chosen = next(r for r in result.ranked if r.responder_id == booked.responder_id)
            return ClaimGranted(
                responder_id=uuid.UUID(chosen.responder_id),
                kind=cast(ResponderKind, chosen.kind),
                travel_mode=cast(TravelMode, chosen.travel_mode),
                distance_m=round(chosen.distance_m, 1),
                eta_s=round(chosen.eta_s, 1),
                radius_m=result.radius_m,
                hold_s=hold_s,
                trace=trace,
            )
        tried.update(r.responder_id for r in result.ranked)


async def _book(
    *,
    locator: Locator,
    request: ClaimRequest,
    result: SearchResult,
    hold_until: datetime,
    fresh_after: float,
    exclude: Collection[str],
) -> tuple[Claimed | None, ClaimTrace | None]:
    """Book the first of the ranked still free (and trace it, when asked)."""
    if request.trace:
        return await _claim_traced(
            locator=locator,
            request=request,
            result=result,
            hold_until=hold_until,
            fresh_after=fresh_after,
            exclude=exclude,
        )
    booked = await locator.index.claim(
        candidates=[r.responder_id for r in result.ranked],
        incident_id=str(request.incident_id),
        hold_until=hold_until,
        fresh_after=fresh_after,
    )
    return booked, None


async def _claim_traced(
    *,
    locator: Locator,
    request: ClaimRequest,
    result: SearchResult,
    hold_until: datetime,
    fresh_after: float,
    exclude: Collection[str],
) -> tuple[Claimed | None, ClaimTrace | None]:
    """Book as the plain claim does, and say what was considered and who was passed over."""
    speed_mps = locator.eta.max_speed_mps
    cap_m = locator.settings.trace_max_radius_m
    # Someone farther than a candidate in a straight line could still beat their ETA only
    # if they are within ETA x the fastest speed; look that far, within a cap.
    radii = [
        (r.responder_id, max(r.distance_m, min(r.eta_s * speed_mps, r.distance_m + cap_m)))
        for r in result.ranked
    ]
    origin = Point(lat=request.lat, lon=request.lon)
    seen = await locator.index.claim_traced(
        candidates=radii,
        incident_id=str(request.incident_id),
        hold_until=hold_until,
        fresh_after=fresh_after,
        origin=origin,
        passed_max=locator.settings.trace_passed_max,
    )
    if seen.booked is None:
        return None, None
    wanted = ClaimFilter(
        kinds=request.kinds or KINDS,
        skills=request.skills,
        exclude=exclude,
        fresh_after=fresh_after,
        incident_id=str(request.incident_id),
    )
    booked_id = seen.booked.responder_id
    chosen = next(r for r in result.ranked if r.responder_id == booked_id)
    candidates: list[TracedCandidate] = []
    ahead = True
    for r, s in zip(result.ranked, seen.candidates, strict=True):
        if r.responder_id == booked_id:
            ahead = False
            outcome, reason = "claimed", None
        elif ahead:
            why = pass_reason(s, wanted)
            outcome, reason = "passed", (why or PassReason.BUSY).value
        else:
            outcome, reason = "ranked_lower", None
        candidates.append(
            TracedCandidate(
                responder_id=uuid.UUID(r.responder_id),
                kind=r.kind,
                travel_mode=r.travel_mode,
                skills=list(s.skills),
                distance_m=round(r.distance_m, 1),
                eta_s=round(r.eta_s, 1),
                outcome=cast(Any, outcome),
                reason=reason,
            )
        )
    others = [o for o in seen.others if o.distance_m is not None]
    etas = await locator.eta.estimate(
        origin=origin,
        candidates=[
            _candidate(o.responder_id, o.kind, o.travel_mode, o.distance_m or 0.0) for o in others
        ],
    )
    passed: list[PassedOver] = []
    for o, eta_s in zip(others, etas, strict=True):
        distance = o.distance_m or 0.0
        if distance >= chosen.distance_m and eta_s >= chosen.eta_s:
            continue  # neither closer nor faster: not passed over
        why = pass_reason(o, wanted)
        if why is None:
            if eta_s < chosen.eta_s:
                continue  # free, eligible and faster only by a race since ranking
            why = PassReason.SLOWER
        passed.append(
            PassedOver(
                responder_id=uuid.UUID(o.responder_id),
                kind=o.kind,
                travel_mode=o.travel_mode,
                distance_m=round(distance, 1),
                eta_s=round(eta_s, 1),
                reason=why.value,
            )
        )
    steps = locator.settings.search_steps_m
    step = next((i for i, s in enumerate(steps, 1) if result.radius_m <= s), len(steps))
    return seen.booked, ClaimTrace(
        radius_m=round(result.radius_m, 1),
        radius_step=step,
        candidates=candidates,
        passed_over=passed,
    )


def _candidate(responder_id: str, kind: str, travel_mode: str, distance_m: float) -> Candidate:
    return Candidate(
        responder_id=responder_id, kind=kind, travel_mode=travel_mode, distance_m=distance_m
    )


async def release(*, locator: Locator, request: ReleaseRequest) -> ReleaseResult:
    """Free a responder if still held for the incident; otherwise change nothing."""
    released = await locator.index.release(
        responder_id=str(request.responder_id), incident_id=str(request.incident_id)
    )
    if released:
        locator.metrics.claims.labels("released").inc()
    return ReleaseResult(responder_id=request.responder_id, released=released)


# --- housekeeping -------------------------------------------------------------
