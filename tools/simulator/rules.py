"""What the simulator expects of the system, declared here and not imported from it.

The checks judge the system against this table, so a bug in the system's own plans,
speeds or targets shows up as a failed check instead of hiding behind them. It
follows the contract (docs/contract.md, "Dispatch rules" and "The 1-3-5 targets"):

- each category's plan units: which kinds may fill a unit and which skills it needs;
- the ETA speed of each travel mode;
- the default stage targets, which a faster-than-life stack divides by its time scale.

A stack started with its own ``PLANS_PATH`` is checked against that file, read here
as data (``{category: {priority?, units: [{kinds, skills?}], stages?}}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KINDS = ("patrol", "auxiliary", "volunteer")
FALLBACK_CATEGORY = "other"
# km/h by travel mode: an ETA is the straight-line distance over this speed.
SPEEDS_KMH: dict[str, float] = {"foot": 5.0, "bicycle": 15.0, "motorbike": 30.0, "car": 35.0}
# The default 1-3-5 stages and their targets in seconds.
STAGE_TARGETS_S: dict[str, int] = {"T1": 60, "T3": 180, "T5": 300}
OFFER_TIMEOUT_S = 30.0
RETRY_INTERVAL_S = 15.0


@dataclass(frozen=True)
class Unit:
    """One unit a category's plan asks for: the kinds that may fill it and the skills it needs."""

    kinds: tuple[str, ...]
    skills: tuple[str, ...] = ()

    def fits(self, kind: str, skills: frozenset[str]) -> bool:
        """Whether a responder of ``kind`` with ``skills`` may fill this unit."""
        return kind in self.kinds and set(self.skills) <= skills


Plans = Mapping[str, tuple[Unit, ...]]

_COMMUNITY = ("volunteer", "auxiliary")
_PATROL = ("patrol",)
_ANY = ("volunteer", "auxiliary", "patrol")


def _community_first(*skills: str) -> tuple[Unit, ...]:
    return (Unit(_COMMUNITY, skills), Unit(_PATROL))


EXPECTED_PLANS: dict[str, tuple[Unit, ...]] = {
    "violence": (Unit(_PATROL), Unit(_PATROL)),  # never volunteers
    "medical": _community_first("first_aid"),
    "fire": _community_first(),
    "dispute": _community_first(),
    "theft": _community_first(),
    "traffic": _community_first(),
    "suspicious": _community_first(),
    "missing_person": (Unit(_ANY),),
    "fraud": (Unit(_ANY),),
    FALLBACK_CATEGORY: (Unit(_ANY),),
}


def speed_mps(travel_mode: str) -> float:
    """The ETA speed of a travel mode in metres per second."""
    return SPEEDS_KMH[travel_mode] / 3.6


def load_plans(path: str | None) -> dict[str, tuple[Unit, ...]]:
    """The units per category from a stack's plans file, or the expected defaults."""
    if path is None:
        return dict(EXPECTED_PLANS)
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    plans = {
        category: tuple(Unit(tuple(u["kinds"]), tuple(u.get("skills", ()))) for u in body["units"])
        for category, body in raw.items()
    }
    plans.setdefault(FALLBACK_CATEGORY, EXPECTED_PLANS[FALLBACK_CATEGORY])
    return plans


def units_for(plans: Plans, category: str) -> tuple[Unit, ...]:
    """A category's units; a category without a plan gets the fallback plan's."""
    return plans.get(category) or plans[FALLBACK_CATEGORY]
