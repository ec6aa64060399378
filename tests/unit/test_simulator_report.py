"""The simulator's report: volunteers first on scene, coverage over time, and two
policies side by side."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tools.simulator.model import Checks, SimResult
from tools.simulator.report import coverage_line, report_text, side_by_side, volunteers_first
from tools.simulator.stack import parse_policy


def incident(*units: tuple[str, str | None], status: str = "resolved") -> dict[str, Any]:
    return {
        "status": status,
        "category": "dispute",
        "units": [{"kind": k, "on_scene_at": at} for k, at in units],
        "milestones": [{"stage": "T3", "state": "met", "seconds": 100.0}],
        "timeline": [{"type": "SlotUnfilled"}],
    }


INCIDENTS = {
    "a": incident(("patrol", "2030-01-01T00:02:00Z"), ("volunteer", "2030-01-01T00:01:00Z")),
    "b": incident(("patrol", "2030-01-01T00:01:00Z"), ("volunteer", "2030-01-01T00:03:00Z")),
    "c": incident(("volunteer", None)),
    "d": incident(("volunteer", "2030-01-01T00:01:00Z"), status="merged"),
}


def result(coverage: list[tuple[float, float]]) -> SimResult:
    return SimResult([], [], INCIDENTS, Checks(), Counter(pings=0), "table", coverage=coverage)


def test_volunteers_first_counts_incidents_by_who_reached_the_scene_first() -> None:
    assert volunteers_first(INCIDENTS.values()) == (1, 2)


def test_the_report_prints_volunteers_first_and_coverage_over_time() -> None:
    text = report_text(result([(0.0, 0.5), (2.0, 0.75), (4.0, 1.0)]))

    assert "volunteers first on scene: 50% (1/2)" in text
    assert "coverage T3 over time: first 50%, min 50%, mean 75%, last 100%" in text
    assert coverage_line([]).endswith("no map yet (the locator had not answered)")


def test_two_policies_print_side_by_side() -> None:
    text = side_by_side(
        [("OFFER_TIMEOUT_S=3", result([(0, 0.5)])), ("OFFER_TIMEOUT_S=1", result([]))]
    )

    lines = text.splitlines()
    assert "OFFER_TIMEOUT_S=3" in lines[1]
    assert "OFFER_TIMEOUT_S=1" in lines[1]
    volunteers = next(line for line in lines if line.startswith("volunteers first"))
    assert volunteers.count("50% (1/2)") == 2
    coverage = next(line for line in lines if line.startswith("coverage T3 mean"))
    assert coverage.split()[3:] == ["50%", "-"]


def test_a_policy_names_settings_per_service() -> None:
    assert parse_policy("OFFER_TIMEOUT_S=1.5, volunteer-locator:claim_candidates=1") == {
        "dispatch": {"OFFER_TIMEOUT_S": "1.5"},
        "volunteer-locator": {"CLAIM_CANDIDATES": "1"},
    }
    with pytest.raises(ValueError, match="not a policy setting"):
        parse_policy("nonsense")
