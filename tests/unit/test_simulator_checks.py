"""The simulator's checks judge by their own rules, so a wrong plan in the system shows."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx

from tools.simulator.checks import lost_reports, nearest_violations, overlapping_offers
from tools.simulator.model import OfferSeen, PostedReport, SimResponder
from tools.simulator.rules import EXPECTED_PLANS, speed_mps

SCENE = (23.02, 113.75)
T0 = 1_000.0


def _responder(rid: str, kind: str, at: tuple[float, float], *skills: str) -> SimResponder:
    r = SimResponder(
        responder_id=rid,
        token="t",
        kind=kind,
        travel_mode="foot",
        skills=frozenset(skills),
        speed_mps=speed_mps("foot"),
        at=at,
        waypoint=at,
        on_duty_at=T0 - 60,
    )
    r.track.append((T0 - 60, at[0], at[1], 0.0))
    return r


def _offer(category: str, rid: str) -> OfferSeen:
    return OfferSeen(
        offer_id=f"offer-{rid}",
        incident_id="incident-1",
        responder_id=rid,
        category=category,
        location=SCENE,
        claimed_at=T0,
        received_at=T0,
        eta_s=10.0,
        expires_at=T0 + 30,
    )


def _violations(category: str, offered: str, *people: SimResponder) -> list[str]:
    return nearest_violations(
        offers=[_offer(category, offered)],
        responders={p.responder_id: p for p in people},
        plans=EXPECTED_PLANS,
        window_s=2.0,
        lag_s=1.0,
    )


def test_a_violent_incident_offered_to_a_volunteer_is_a_violation() -> None:
    volunteer = _responder("v", "volunteer", SCENE)
    found = _violations("violence", "v", volunteer)
    assert len(found) == 1
    assert "ineligible volunteer" in found[0]


def test_a_medical_incident_needs_first_aid_from_community_responders() -> None:
    untrained = _responder("v", "volunteer", SCENE)
    trained = _responder("w", "volunteer", SCENE, "first_aid")
    assert _violations("medical", "v", untrained)
    assert _violations("medical", "w", trained) == []


def test_an_offer_passing_over_a_much_closer_free_responder_is_a_violation() -> None:
    far = _responder("far", "patrol", (SCENE[0] + 0.02, SCENE[1]))  # about 2.2 km
    near = _responder("near", "patrol", (SCENE[0] + 0.001, SCENE[1]))  # about 110 m
    found = _violations("fraud", "far", far, near)
    assert len(found) == 1
    assert "near" in found[0]
    assert _violations("fraud", "near", far, near) == []


def test_the_simulator_imports_nothing_of_the_system_it_checks() -> None:
    package = Path(__file__).resolve().parents[2] / "tools" / "simulator"
    for module in sorted(package.glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith("services"), f"{module.name} imports {name}"


def _held(offer_id: str, incident_id: str, claimed_at: float, outcome: str) -> OfferSeen:
    return OfferSeen(
        offer_id=offer_id,
        incident_id=incident_id,
        responder_id="r",
        category="other",
        location=SCENE,
        claimed_at=claimed_at,
        received_at=claimed_at,
        eta_s=10.0,
        expires_at=claimed_at + 3,
        outcome=outcome,
    )


def test_an_offer_left_unanswered_when_the_run_stopped_holds_nobody_past_its_expiry() -> None:
    # The app never answered the first offer (the run stopped looking): the system let
    # it lapse at its expiry and offered the responder something else 5 s later.
    first = _held("o1", "i1", T0, "pending")
    second = _held("o2", "i2", T0 + 5, "pending")
    assert overlapping_offers([first, second]) == []


def test_an_offer_made_while_the_app_holds_an_accepted_one_is_a_double_booking() -> None:
    first = _held("o1", "i1", T0, "accepted")
    second = _held("o2", "i2", T0 + 5, "pending")
    assert len(overlapping_offers([first, second])) == 1


async def test_a_report_still_received_is_lost_unless_its_incident_went_to_the_desk() -> None:
    def intake(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "received"})

    reports = [PostedReport(rid, "t", "violence", SCENE, T0) for rid in ("flagged", "quiet")]
    incidents = {
        "i1": {"reports": [{"report_id": "flagged"}], "no_responder": True},
        "i2": {"reports": [{"report_id": "quiet"}], "no_responder": False},
    }
    async with httpx.AsyncClient(transport=httpx.MockTransport(intake)) as http:
        lost = await lost_reports(http, "http://intake.test", reports, incidents)
    assert lost == ["report quiet: reporter sees received"]
