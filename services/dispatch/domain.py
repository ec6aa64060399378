"""The dispatch domain: plans, the offer and unit state machines and the 1-3-5 milestones.

Pure logic with no I/O: everything here takes plain values (including the time)
and returns plain values, so it can be tested to the second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.errors import Conflict

EARTH_RADIUS_M = 6_371_008.8


class IncidentStatus(StrEnum):
    """Where an incident is in its life."""

    OPEN = "open"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    MERGED = "merged"


class OfferStatus(StrEnum):
    """An offer is pending until it is answered, lapses or is taken back."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class UnitState(StrEnum):
    """A unit on an incident only ever moves forward through these."""

    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    CLEARED = "cleared"


class StageKind(StrEnum):
    """What meets a stage: a responder moving, the first on scene, or the whole plan on scene."""

    RESPOND = "respond"
    ARRIVE = "arrive"
    REINFORCE = "reinforce"


class MilestoneState(StrEnum):
    """Each stage is pending until it is met in time or its deadline passes."""

    PENDING = "pending"
    MET = "met"
    BREACHED = "breached"


@dataclass(frozen=True)
class StageSpec:
    """One stage of a plan: its name, label, what meets it and its target."""

    stage: str
    label: str
    kind: StageKind
    target_s: int


@dataclass(frozen=True)
class PlanSlot:
    """One unit a plan needs: which kinds may fill it and which skills they must have."""

    kinds: tuple[str, ...]
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResponsePlan:
    """How a category is answered: priority (1 is most urgent), units and stages."""

    category: str
    priority: int
    slots: tuple[PlanSlot, ...]
    stages: tuple[StageSpec, ...]


DEFAULT_STAGES: tuple[StageSpec, ...] = (
    StageSpec("T1", "respond", StageKind.RESPOND, 60),
    StageSpec("T3", "arrive", StageKind.ARRIVE, 180),
    StageSpec("T5", "reinforce", StageKind.REINFORCE, 300),
)


def tightened(
    stages: Sequence[StageSpec], *, factor: float, overrides: dict[str, int] | None = None
) -> tuple[StageSpec, ...]:
    """The stages with targets scaled by a zone tier's factor (never loosened) and overrides."""
    factor = min(factor, 1.0)
    out = []
    for spec in stages:
        target = max(1, round(spec.target_s * factor))
        if overrides and spec.stage in overrides:
            target = overrides[spec.stage]
        out.append(StageSpec(spec.stage, spec.label, spec.kind, target))
    return tuple(out)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


@dataclass(frozen=True)
class Box:
    """A latitude/longitude box; ``lon`` is None where the box would cross the
    antimeridian (then any longitude)."""

    lat: tuple[float, float]
    lon: tuple[float, float] | None


def box_around(lat: float, lon: float, radius_m: float) -> Box:
    """A box holding every point within ``radius_m`` of (lat, lon), with a little to spare:
    a cheap first filter for a database query before the exact distance."""
    metres_per_degree = math.pi * EARTH_RADIUS_M / 180 / 1.01
    dlat = radius_m / metres_per_degree
    cos_lat = math.cos(math.radians(lat))
    if cos_lat < 0.01 or abs(lat) + dlat >= 90:
        return Box((lat - dlat, lat + dlat), None)
    dlon = dlat / cos_lat
    if abs(lon) + dlon >= 180:
        return Box((lat - dlat, lat + dlat), None)
    return Box((lat - dlat, lat + dlat), (lon - dlon, lon + dlon))


@dataclass(frozen=True)
class OpenIncidentView:
    """What duplicate detection needs to know about an open incident."""

    incident_id: str
    category: str
    lat: float
    lon: float
    last_report_at: datetime


def find_duplicate(
    candidates: Iterable[OpenIncidentView],
    *,
    category: str,
    lat: float,
    lon: float,
    received_at: datetime,
    radius_m: float,
    window_s: float,
) -> OpenIncidentView | None:
    """The nearest open incident of the same category within the radius and time window."""
    best: tuple[float, OpenIncidentView] | None = None
    for inc in candidates:
        if inc.category != category:
            continue
        if abs((received_at - inc.last_report_at).total_seconds()) > window_s:
            continue
        d = distance_m(lat, lon, inc.lat, inc.lon)
        if d <= radius_m and (best is None or d < best[0]):
            best = (d, inc)
    return best[1] if best else None


def slots_to_offer(slot_count: int, *, filled: Iterable[int], pending: Iterable[int]) -> list[int]:
    """Plan slots with neither a unit nor an open offer, in plan order."""
    busy = set(filled) | set(pending)
    return [i for i in range(slot_count) if i not in busy]


def manual_slot(slots: Sequence[PlanSlot], *, filled: Sequence[int]) -> tuple[int, PlanSlot]:
    """The unit a dispatcher's manual assignment fills, with its index.

    The first slot of the plan without a unit; once all are filled, an extra unit past
    the plan (numbered after every slot and unit) that any kind of the plan may fill.
    """
    taken = set(filled)
    for index, slot in enumerate(slots):
        if index not in taken:
            return index, slot
    extra = PlanSlot(tuple(sorted({kind for slot in slots for kind in slot.kinds})))
    return len(slots) + len(filled), extra


def check_offer_answerable(status: str, *, expires_at: datetime, now: datetime) -> bool:
    """Whether an offer can still be answered; False means it has just lapsed.

    Raises :class:`Conflict` if it was already answered, expired or withdrawn.
    """
    if status != OfferStatus.PENDING:
        raise Conflict(f"the offer is already {status}", code="offer_closed")
    return now < expires_at


_UNIT_ORDER = {s: i for i, s in enumerate(UnitState)}


def check_unit_transition(current: str, new: str) -> bool:
    """Whether moving a unit from ``current`` to ``new`` changes anything.

    Units move forward only (skipping steps is allowed, a responder may report on
    scene without en route); repeating the current status is a harmless no-op.
    """
    if current == UnitState.CLEARED:
        raise Conflict("the unit has already cleared", code="unit_cleared")
    if new == current:
        return False
    if _UNIT_ORDER[UnitState(new)] < _UNIT_ORDER[UnitState(current)]:
        raise Conflict(f"a unit {current} cannot go back to {new}", code="unit_status_backwards")
    return True


@dataclass(frozen=True)
class UnitTimes:
    """When one unit started moving and arrived."""

    responding_at: datetime | None
    on_scene_at: datetime | None


@dataclass(frozen=True)
class Progress:
    """When each kind of stage was achieved, if it has been."""

    responded_at: datetime | None
    first_on_scene_at: datetime | None
    reinforced_at: datetime | None


def progress_of(units: Iterable[UnitTimes], *, required_units: int) -> Progress:
    """Work out the stage achievements from the units' times."""
    units = list(units)
    moving = sorted(u.responding_at for u in units if u.responding_at is not None)
    arrived = sorted(u.on_scene_at for u in units if u.on_scene_at is not None)
    needed = max(required_units, 1)
    return Progress(
        responded_at=moving[0] if moving else None,
        first_on_scene_at=arrived[0] if arrived else None,
        reinforced_at=arrived[needed - 1] if len(arrived) >= needed else None,
    )


def achieved_at(kind: str, progress: Progress) -> datetime | None:
    """When the stage of ``kind`` was achieved."""
    if kind == StageKind.RESPOND:
        return progress.responded_at
    if kind == StageKind.ARRIVE:
        return progress.first_on_scene_at
    return progress.reinforced_at


@dataclass(frozen=True)
class StageOutcome:
    """What happened to a pending stage: met with seconds, or breached (maybe reached late)."""

    state: MilestoneState
    seconds: float | None


def judge_stage(
    *, state: str, kind: str, due_at: datetime, received_at: datetime, progress: Progress
) -> StageOutcome | None:
    """The new outcome of a stage given the progress, or None if nothing changes.

    A stage achieved after its deadline is breached, even if the deadline's timer
    has not fired yet; a breached stage reached later keeps its state and gains the
    seconds it took, for the console.
    """
    reached = achieved_at(kind, progress)
    if reached is None:
        return None
    seconds = max(0.0, (reached - received_at).total_seconds())
    if state == MilestoneState.PENDING:
        if reached <= due_at:
            return StageOutcome(MilestoneState.MET, seconds)
        return StageOutcome(MilestoneState.BREACHED, seconds)
    return None


def late_breach_seconds(
    *, state: str, seconds: float | None, reached: datetime | None, received_at: datetime
) -> float | None:
    """The seconds a breached stage took once it is finally reached, or None if nothing to
    record (not breached, already recorded, or not reached yet)."""
    if state != MilestoneState.BREACHED or seconds is not None or reached is None:
        return None
    return max(0.0, (reached - received_at).total_seconds())


def judge_deadline(*, state: str, due_at: datetime, now: datetime) -> bool:
    """Whether a stage's deadline has passed with the stage still pending."""
    return state == MilestoneState.PENDING and now >= due_at


@dataclass(frozen=True)
class QueueEntry:
    """What ranks an open incident on the live queue."""

    flagged: bool
    next_due_at: datetime | None
    priority: int
    received_at: datetime


def is_flagged(*, no_responder: bool, stage_states: Iterable[str]) -> bool:
    """Whether an incident goes on top of the queue: nobody available, or a stage breached."""
    return no_responder or any(state == MilestoneState.BREACHED for state in stage_states)


def urgency_key(entry: QueueEntry) -> tuple[int, float, int, float]:
    """Sort key, most urgent first.

    Breached or unanswerable incidents come first; then the least time left to the
    next pending target; incidents with every stage settled come last.
    """
    due = entry.next_due_at.timestamp() if entry.next_due_at else math.inf
    return (0 if entry.flagged else 1, due, entry.priority, entry.received_at.timestamp())
