"""Response plans: which kinds and skills answer a category, how many units and which targets.

The shipped defaults follow docs/contract.md (Dispatch rules): volunteers first where safe,
with a patrol officer as reinforcement; violence never goes to volunteers; medical
wants first aid; fraud, missing persons and everything else need one unit of any kind.
A JSON file can replace them (``PLANS_PATH``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from services.dispatch.domain import DEFAULT_STAGES, PlanSlot, ResponsePlan, StageKind, StageSpec

FALLBACK_CATEGORY = "other"
ANY_KIND = ("volunteer", "auxiliary", "patrol")
COMMUNITY = ("volunteer", "auxiliary")
PATROL = ("patrol",)


def default_plans() -> dict[str, ResponsePlan]:
    """The shipped plans, one per category."""

    def community_first(category: str, priority: int, skills: tuple[str, ...] = ()) -> ResponsePlan:
        return ResponsePlan(
            category, priority, (PlanSlot(COMMUNITY, skills), PlanSlot(PATROL)), DEFAULT_STAGES
        )

    def any_one(category: str, priority: int) -> ResponsePlan:
        return ResponsePlan(category, priority, (PlanSlot(ANY_KIND),), DEFAULT_STAGES)

    plans = [
        ResponsePlan("violence", 1, (PlanSlot(PATROL), PlanSlot(PATROL)), DEFAULT_STAGES),
        community_first("medical", 1, ("first_aid",)),
        community_first("fire", 1),
        community_first("dispute", 2),
        community_first("theft", 2),
        community_first("traffic", 2),
        community_first("suspicious", 3),
        any_one("missing_person", 2),
        any_one("fraud", 3),
        any_one(FALLBACK_CATEGORY, 4),
    ]
    return {p.category: p for p in plans}


def plan_from_json(category: str, raw: Mapping[str, Any]) -> ResponsePlan:
    """One plan from its JSON form: ``{priority, units: [{kinds, skills}], stages?}``."""
    stages = tuple(
        StageSpec(s["stage"], s.get("label", s["stage"]), StageKind(s["kind"]), int(s["target_s"]))
        for s in raw.get("stages", [])
    )
    return ResponsePlan(
        category=category,
        priority=int(raw.get("priority", 3)),
        slots=tuple(PlanSlot(tuple(u["kinds"]), tuple(u.get("skills", ()))) for u in raw["units"]),
        stages=stages or DEFAULT_STAGES,
    )


def load_plans(path: str | None) -> dict[str, ResponsePlan]:
    """The plans from ``path`` (a JSON object keyed by category), or the shipped defaults."""
    if path is None:
        return default_plans()
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    plans = {category: plan_from_json(category, body) for category, body in raw.items()}
    if FALLBACK_CATEGORY not in plans:
        plans[FALLBACK_CATEGORY] = default_plans()[FALLBACK_CATEGORY]
    return plans


def plan_for(plans: Mapping[str, ResponsePlan], category: str) -> ResponsePlan:
    """The category's plan; unknown categories get the fallback plan under their own name."""
    plan = plans.get(category)
    if plan is not None:
        return plan
    fallback = plans[FALLBACK_CATEGORY]
    return ResponsePlan(category, fallback.priority, fallback.slots, fallback.stages)


# The typed form of the units stored with an incident: one place reads and writes them.
STORED_SLOTS: TypeAdapter[tuple[PlanSlot, ...]] = TypeAdapter(tuple[PlanSlot, ...])


def slots_to_json(plan: ResponsePlan) -> str:
    """The plan's units as stored with an incident (plans may change after it opened)."""
    return json.dumps(STORED_SLOTS.dump_python(plan.slots, mode="json"))


def slots_from_json(raw: str) -> tuple[PlanSlot, ...]:
    """The units stored with an incident."""
    return STORED_SLOTS.validate_json(raw)
