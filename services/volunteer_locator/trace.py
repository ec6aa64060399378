"""The decision trace of a claim: who was considered, and why closer responders were not.

The claim's Lua script describes each responder as the index saw them at the moment of
booking (:class:`Seen`); this module turns those descriptions into reasons. It is pure, so
the reasons are tested without Redis.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum


class PassReason(StrEnum):
    """Why a responder closer than the chosen one (by straight line or ETA) was not asked."""

    REVOKED = "revoked"
    OFF_DUTY = "off_duty"
    EXCLUDED = "excluded"  # the caller's exclude list: dispatch says declined earlier etc.
    BUSY = "busy"
    STALE = "stale_position"
    WRONG_KIND = "wrong_kind"
    WRONG_SKILL = "wrong_skill"
    SLOWER = "slower_eta"  # closer in a straight line, but slower to arrive


@dataclass(frozen=True, slots=True)
class Seen:
    """One responder as the claim saw them."""

    responder_id: str
    kind: str
    travel_mode: str
    skills: tuple[str, ...]
    on_duty: bool
    status: str
    last_seen: float | None
    revoked: bool
    distance_m: float | None = None


@dataclass(frozen=True, slots=True)
class ClaimFilter:
    """What the claim asked for."""

    kinds: Collection[str]
    skills: Collection[str]
    exclude: Collection[str]
    fresh_after: float
    incident_id: str


def pass_reason(seen: Seen, wanted: ClaimFilter) -> PassReason | None:
    """Why ``seen`` could not be booked for this claim; None if nothing stood in the way."""
    if not seen.on_duty:
        return PassReason.REVOKED if seen.revoked else PassReason.OFF_DUTY
    if seen.responder_id in wanted.exclude:
        return PassReason.EXCLUDED
    if seen.status in ("offered", "busy"):
        return PassReason.BUSY
    if seen.last_seen is None or seen.last_seen < wanted.fresh_after:
        return PassReason.STALE
    if wanted.kinds and seen.kind not in wanted.kinds:
        return PassReason.WRONG_KIND
    if not set(wanted.skills) <= set(seen.skills):
        return PassReason.WRONG_SKILL
    return None


def parse_seen(flat: Sequence[str], start: int, count: int) -> tuple[list[Seen], int]:
    """``count`` descriptions of 9 fields from the Lua reply at ``start``; and the next index."""
    out: list[Seen] = []
    i = start
    for _ in range(count):
        rid, dist, kind, mode, skills, on_duty, status, seen, revoked = flat[i : i + 9]
        out.append(
            Seen(
                responder_id=rid,
                kind=kind,
                travel_mode=mode,
                skills=tuple(s for s in skills.split("|") if s),
                on_duty=on_duty == "1",
                status=status,
                last_seen=float(seen) if seen else None,
                revoked=revoked == "1",
                distance_m=float(dist) if dist else None,
            )
        )
        i += 9
    return out, i
