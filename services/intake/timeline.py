"""How incident events become steps on a reporter's timeline. Pure: no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.intake.models import FINAL_STATUSES, STATUS_RANK, ReportStatus
from shared.events import (
    Event,
    IncidentCancelled,
    IncidentResolved,
    OfferAccepted,
    ResponderOffered,
    UnitStatusChanged,
)

# Steps that may happen once per unit (a volunteer, then a patrol officer as reinforcement);
# every other step is recorded only when it moves the report forward.
PER_UNIT_STEPS = frozenset({"responder_assigned", "on_scene"})


@dataclass(frozen=True)
class StepChange:
    """A step an incident event adds to the timeline of each of its reports."""

    step: ReportStatus
    responder_kind: str | None = None
    eta_s: float | None = None
    # A one-way reference to the unit, so one unit's step is not shown twice; never shown.
    unit_ref: str | None = None


def unit_ref(responder_id: object) -> str:
    """An opaque reference to a responder that does not reveal who they are."""
    return hashlib.sha256(str(responder_id).encode()).hexdigest()[:16]


def step_for(event: Event) -> StepChange | None:
    """The reporter-visible step an incident event means, if any."""
    match event:
        case ResponderOffered():
            return StepChange("dispatched")
        case OfferAccepted(responder_id=rid, kind=kind, eta_s=eta_s):
            return StepChange("responder_assigned", kind, eta_s, unit_ref(rid))
        case UnitStatusChanged(responder_id=rid, kind=kind, status="assigned", eta_s=eta_s):
            return StepChange("responder_assigned", kind, eta_s, unit_ref(rid))
        case UnitStatusChanged(responder_id=rid, kind=kind, status="on_scene"):
            return StepChange("on_scene", kind, None, unit_ref(rid))
        case IncidentResolved():
            return StepChange("resolved")
        case IncidentCancelled(merged_into=None):
            # A merge is not the end for the reporter: their report lives on in the target.
            return StepChange("cancelled")
    return None


def should_record(
    *, current: str, change: StepChange, recorded: set[tuple[str, str | None]]
) -> bool:
    """Whether ``change`` adds a step for a report now at ``current`` with steps ``recorded``.

    ``recorded`` holds the ``(step, unit_ref)`` pairs the report already has.
    """
    if current in FINAL_STATUSES:
        return False
    if change.step in PER_UNIT_STEPS:
        return (change.step, change.unit_ref) not in recorded
    return STATUS_RANK[change.step] > STATUS_RANK[current]


def status_after(current: str, step: str) -> str:
    """The report's status once ``step`` is recorded: it only moves forward."""
    if current in FINAL_STATUSES:
        return current
    return step if STATUS_RANK[step] > STATUS_RANK[current] else current
