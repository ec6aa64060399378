"""The four correctness checks, run at the end of a run.

They judge the system from the simulator's own ground truth and the system's records
(``GET /v1/incidents/{id}``, ``GET /v1/reports/{id}``), against the simulator's own
rules (:mod:`tools.simulator.rules`), never the system's code:

- *nearest*: for every offer, no other responder was eligible (kind and skills
  of a plan unit the offered responder fits), on duty, free and not already tried
  for that incident at claim time, and clearly closer by ETA. The claim time is the
  offer event's ``occurred_at``. A responder counts as free only outside every hold
  the simulator saw (from its offer's claim to its decline, expiry or clearing),
  widened by the ingest-lag allowance on both sides. Positions are the simulator's
  true positions at claim time; since the system only knows pings that are up to one
  ping interval plus the ingest lag old, each responder's ETA is uncertain by the
  distance it actually moved in that window over its speed, plus 1 s for the geo
  index's rounding. A "clearly closer" rival beats the offered ETA even after both
  uncertainties are added against it.
- *no double booking*: from dispatch's records, no responder's offers and
  assignments on different incidents overlap in time; and no offer reached a
  responder while the simulator saw them holding another one.
- *no lost report*: every report answered with 202 is found in exactly one
  incident, and its reporter's view has moved past ``received``.
- *milestones resolved*: no milestone is still pending after its deadline (plus a
  grace); if the run waited past the last deadline, none is pending at all.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from tools.simulator.model import Checks, OfferSeen, PostedReport, SimResponder
from tools.simulator.rules import Plans, Unit, units_for
from tools.simulator.town import distance_m
from tools.simulator.wire import parse_time

CLAIM_SLACK_S = 0.5
GEO_ROUNDING_S = 1.0
DEADLINE_GRACE_S = 3.0


def nearest_violations(
    *,
    offers: Sequence[OfferSeen],
    responders: Mapping[str, SimResponder],
    plans: Plans,
    window_s: float,
    lag_s: float,
) -> list[str]:
    """Offers for which a clearly better eligible free responder existed at claim time."""
    holds: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    tried: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for o in offers:
        holds[o.responder_id].append((o.claimed_at, o.released_at, o.incident_id))
        tried[o.incident_id].append((o.claimed_at, o.responder_id))

    def free_at(responder_id: str, t: float) -> bool:
        return not any(
            start - CLAIM_SLACK_S - lag_s <= t <= end + lag_s + CLAIM_SLACK_S
            for start, end, _ in holds[responder_id]
        )

    def eta_bounds(r: SimResponder, origin: tuple[float, float], t: float) -> tuple[float, float]:
        (lat, lon), odo = r.position_at(t)
        _, odo_before = r.position_at(t - window_s - CLAIM_SLACK_S)
        eta = distance_m((lat, lon), origin) / r.speed_mps
        spread = (odo - odo_before) / r.speed_mps + GEO_ROUNDING_S
        return eta - spread, eta + spread

    violations = []
    for o in offers:
        offered = responders.get(o.responder_id)
        if offered is None:
            violations.append(f"offer {o.offer_id} went to an unknown responder {o.responder_id}")
            continue
        fits = [u for u in units_for(plans, o.category) if u.fits(offered.kind, offered.skills)]
        if not fits:
            violations.append(
                f"offer {o.offer_id} ({o.category}) went to an ineligible {offered.kind}"
            )
            continue
        asked = {rid for t, rid in tried[o.incident_id] if t < o.claimed_at}
        offered_low, _ = eta_bounds(offered, o.location, o.claimed_at)
        worst: str | None = None
        for unit in fits:
            rival = _best_rival(
                unit=unit,
                offer=o,
                asked=asked,
                offered_low=offered_low,
                candidates=[
                    c
                    for c in responders.values()
                    if c.on_duty_at <= o.claimed_at - lag_s
                    and free_at(c.responder_id, o.claimed_at)
                ],
                eta_bounds=eta_bounds,
            )
            if rival is None:
                worst = None
                break
            high, best = rival
            worst = (
                f"offer {o.offer_id} ({o.category}) to {offered.kind}/{offered.travel_mode} "
                f"(ETA ≥ {offered_low:.0f}s) but free {best.kind}/{best.travel_mode} "
                f"{best.responder_id} had ETA ≤ {high:.0f}s"
            )
        if worst:
            violations.append(worst)
    return violations


def _best_rival(
    *,
    unit: Unit,
    offer: OfferSeen,
    asked: set[str],
    offered_low: float,
    candidates: Iterable[SimResponder],
    eta_bounds: Callable[[SimResponder, tuple[float, float], float], tuple[float, float]],
) -> tuple[float, SimResponder] | None:
    """The fitting candidate, not offered nor asked before, surely nearer than the one
    offered (its highest ETA below the offered one's lowest), with that ETA; else None."""
    rivals = []
    for c in candidates:
        if c.responder_id == offer.responder_id or c.responder_id in asked:
            continue
        if not unit.fits(c.kind, c.skills):
            continue
        _, high = eta_bounds(c, offer.location, offer.claimed_at)
        if high < offered_low:
            rivals.append((high, c))
    return min(rivals, key=lambda x: x[0]) if rivals else None


def hold_ends_at(offer: OfferSeen) -> float:
    """When the app's hold on an offer ends as far as it knows: when it asked to end it,
    and for an offer it never accepted, no later than the expiry the offer carried (an
    offer still unanswered when the run stopped looking holds nobody past that)."""
    if offer.outcome == "accepted":
        return offer.release_requested_at
    return min(offer.release_requested_at, offer.expires_at)


def overlapping_offers(offers: Sequence[OfferSeen]) -> list[str]:
    """Offers claimed for a responder before the app had even asked to end the last hold."""
    by_responder: dict[str, list[OfferSeen]] = defaultdict(list)
    for o in offers:
        by_responder[o.responder_id].append(o)
    found = []
    for responder_id, items in by_responder.items():
        items.sort(key=lambda o: o.claimed_at)
        for before, after in itertools.pairwise(items):
            if after.claimed_at < hold_ends_at(before):
                found.append(
                    f"responder {responder_id} was offered {after.incident_id} while holding "
                    f"{before.incident_id} (seen on their stream)"
                )
    return found


def double_bookings(incidents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Overlapping holds of one responder on different incidents, from dispatch's records."""
    now = time.time()
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for incident in incidents:
        closed = parse_time(incident["closed_at"]) if incident.get("closed_at") else now
        incident_id = str(incident["incident_id"])
        for offer in incident["offers"]:
            if offer["status"] == "accepted":
                continue  # the unit's span covers it
            end = offer["answered_at"] or offer["expires_at"]
            spans[str(offer["responder_id"])].append(
                (parse_time(offer["offered_at"]), min(parse_time(end), closed), incident_id)
            )
        for unit in incident["units"]:
            start = parse_time(unit["assigned_at"])
            accepted = [
                parse_time(o["offered_at"])
                for o in incident["offers"]
                if o["status"] == "accepted" and o["responder_id"] == unit["responder_id"]
            ]
            end = parse_time(unit["cleared_at"]) if unit["cleared_at"] else closed
            spans[str(unit["responder_id"])].append((min([start, *accepted]), end, incident_id))
    found = []
    for responder_id, items in spans.items():
        items.sort()
        held_until, held = -math.inf, ""
        for start, end, incident_id in items:
            if incident_id != held and start < held_until:
                found.append(
                    f"responder {responder_id} held {held} until {held_until:.3f} "
                    f"and {incident_id} from {start:.3f}"
                )
            if end > held_until:
                held_until, held = end, incident_id
    return found


def unresolved_milestones(
    incidents: Mapping[str, Mapping[str, Any]], *, waited: bool, now: float
) -> tuple[list[str], int]:
    """Milestones still pending past their deadline (all pending ones if the run waited
    past the last deadline), and how many pending ones are not yet due."""
    found, not_yet_due = [], 0
    for incident_id, incident in incidents.items():
        if incident["status"] == "merged":
            continue
        for m in incident["milestones"]:
            if m["state"] != "pending":
                continue
            if waited or parse_time(m["due_at"]) + DEADLINE_GRACE_S < now:
                found.append(
                    f"incident {incident_id} ({incident['category']}): {m['stage']} "
                    f"still pending, due {m['due_at']}"
                )
            else:
                not_yet_due += 1
    return found, not_yet_due


async def lost_reports(
    http: httpx.AsyncClient,
    intake_url: str,
    reports: Sequence[PostedReport],
    incidents: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Reports that no incident holds, or whose reporter never saw them dispatched while
    their incident was not handed to the desk either (flagged ``no_responder``: nobody
    eligible was free, which is the dispatcher's alarm, not a loss)."""
    holders: dict[str, list[str]] = defaultdict(list)
    for incident_id, incident in incidents.items():
        for report in incident["reports"]:
            holders[str(report["report_id"])].append(incident_id)
    lost = []
    for report in reports:
        answer = await http.get(
            f"{intake_url}/v1/reports/{report.report_id}",
            headers={"authorization": f"Bearer {report.tracking_token}"},
        )
        status = answer.json().get("status") if answer.status_code == 200 else None
        flagged = any(incidents[i].get("no_responder") for i in holders[report.report_id])
        if status is None or (status == "received" and not flagged):
            lost.append(f"report {report.report_id}: reporter sees {status or answer.text}")
        if len(holders[report.report_id]) != 1:
            lost.append(
                f"report {report.report_id}: in incidents {holders[report.report_id] or '[]'}"
            )
    return lost


async def run_checks(
    *,
    http: httpx.AsyncClient,
    intake_url: str,
    reports: Sequence[PostedReport],
    offers: Sequence[OfferSeen],
    responders: Mapping[str, SimResponder],
    plans: Plans,
    incidents: Mapping[str, Mapping[str, Any]],
    window_s: float,
    lag_s: float,
    waited: bool,
) -> Checks:
    """Run the four correctness checks."""
    checks = Checks(waited_past_last_deadline=waited)
    checks.offers_checked = len(offers)
    checks.nearest_violations = nearest_violations(
        offers=offers, responders=responders, plans=plans, window_s=window_s, lag_s=lag_s
    )
    checks.double_bookings = double_bookings(incidents.values()) + overlapping_offers(offers)
    checks.reports_checked = len(reports)
    checks.lost_reports = await lost_reports(http, intake_url, reports, incidents)
    checks.incidents_checked = len(incidents)
    checks.unresolved_milestones, checks.not_yet_due = unresolved_milestones(
        incidents, waited=waited, now=time.time()
    )
    return checks
