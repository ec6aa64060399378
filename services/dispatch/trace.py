"""The decision trace an offer keeps: what the locator's claim considered, with the
reasons only dispatch knows (who declined earlier) filled in. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.dispatch.domain import OfferStatus, PlanSlot

# What a responder the caller excluded did earlier on this incident, as a trace reason.
EARLIER_REASONS: dict[str, str] = {
    OfferStatus.DECLINED: "declined_earlier",
    OfferStatus.EXPIRED: "no_answer_earlier",
    OfferStatus.WITHDRAWN: "withdrawn_earlier",
    OfferStatus.PENDING: "offered_this_incident",
    OfferStatus.ACCEPTED: "on_this_incident",
}


def earlier_outcomes(offers: Iterable[tuple[str, str]], units: Iterable[str]) -> dict[str, str]:
    """Responder id -> trace reason, from the incident's (responder id, offer status) and
    unit responder ids; a unit outranks any offer of the same responder."""
    out = {rid: EARLIER_REASONS.get(status, "declined_earlier") for rid, status in offers}
    out.update(dict.fromkeys(units, "on_this_incident"))
    return out


def explain(
    raw: Mapping[str, Any] | None,
    *,
    slot_index: int,
    slot: PlanSlot,
    earlier: Mapping[str, str],
) -> dict[str, Any] | None:
    """The trace to store with an offer: the claim's trace, with its plan slot, and each
    ``excluded`` responder's reason replaced by what they did earlier on this incident."""
    if raw is None:
        return None

    def reason(entry: Mapping[str, Any]) -> Any:
        if entry.get("reason") == "excluded":
            return earlier.get(str(entry["responder_id"]), "declined_earlier")
        return entry.get("reason")

    return {
        "slot": slot_index,
        "slot_kinds": list(slot.kinds),
        "slot_skills": list(slot.skills),
        "radius_m": raw.get("radius_m"),
        "radius_step": raw.get("radius_step"),
        "candidates": [{**c, "reason": reason(c)} for c in raw.get("candidates", [])],
        "passed_over": [{**p, "reason": reason(p)} for p in raw.get("passed_over", [])],
    }
