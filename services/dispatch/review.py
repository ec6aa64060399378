"""Review: an incident's full record for export, the shift report, and the coverage
samples the shift report draws its curve from."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, delete, select

from services.dispatch.context import Dispatch
from services.dispatch.coverage import ALL
from services.dispatch.models import (
    CoverageSample,
    Incident,
    IncidentDetail,
    Milestone,
    TimelineEntry,
)
from shared.db import SessionFactory

# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

EXPORT_COLUMNS = (
    "record",
    "offer_id",
    "at",
    "type",
    "status",
    "responder_id",
    "kind",
    "slot",
    "distance_m",
    "eta_s",
    "reason",
    "detail",
)


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a ``'``."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV with a header, every text cell made formula-safe."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: safe_cell(row.get(k)) for k in columns})
    return out.getvalue()


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def incident_rows(detail: IncidentDetail) -> list[dict[str, Any]]:
    """An incident flattened for CSV: one row per report, timeline entry, offer, trace
    entry, unit and milestone, each saying in ``record`` which it is (the incident's own
    row carries its grid in ``reason`` and its address in ``detail``)."""
    rows: list[dict[str, Any]] = [
        {
            "record": "incident",
            "at": _at(detail.received_at),
            "type": detail.category,
            "status": detail.status,
            "reason": detail.grid,
            "detail": detail.address,
        }
    ]
    rows += [
        {"record": "report", "at": _at(r.received_at), "detail": str(r.report_id)}
        for r in detail.reports
    ]
    rows += [
        {"record": "timeline", "at": _at(t.at), "type": t.type, "detail": json.dumps(t.detail)}
        for t in detail.timeline
    ]
    for o in detail.offers:
        rows.append(
            {
                "record": "offer",
                "offer_id": str(o.offer_id),
                "at": _at(o.offered_at),
                "status": o.status,
                "responder_id": str(o.responder_id),
                "kind": o.kind,
                "slot": o.slot,
                "distance_m": o.distance_m,
                "eta_s": o.eta_s,
            }
        )
        if o.trace is None:
            continue
        for c in o.trace.candidates:
            rows.append(
                {
                    "record": "trace_candidate",
                    "offer_id": str(o.offer_id),
                    "type": c.outcome,
                    "responder_id": str(c.responder_id),
                    "kind": c.kind,
                    "slot": o.trace.slot,
                    "distance_m": c.distance_m,
                    "eta_s": c.eta_s,
                    "reason": c.reason,
                    "detail": " ".join(c.skills),
                }
            )
        for p in o.trace.passed_over:
            rows.append(
                {
                    "record": "trace_passed_over",
                    "offer_id": str(o.offer_id),
                    "responder_id": str(p.responder_id),
                    "kind": p.kind,
                    "slot": o.trace.slot,
                    "distance_m": p.distance_m,
                    "eta_s": p.eta_s,
                    "reason": p.reason,
                }
            )
    rows += [
        {
            "record": "unit",
            "at": _at(u.assigned_at),
            "status": u.status,
            "responder_id": str(u.responder_id),
            "kind": u.kind,
            "eta_s": u.eta_s,
        }
        for u in detail.units
    ]
    rows += [
        {
            "record": "milestone",
            "at": _at(m.due_at),
            "type": m.stage,
            "status": m.state,
            "detail": "" if m.seconds is None else str(round(m.seconds, 1)),
        }
        for m in detail.milestones
    ]
    return rows


# --- the shift report -------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (linear between closest ranks); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[round(q * 100) - 1]


async def shift_report(
    *, dispatch: Dispatch, office: str | None, start: datetime, end: datetime
) -> dict[str, Any]:
    """Incidents received in ``[start, end)`` (of ``office``, or all): counts by category,
    1-3-5 compliance and times per stage, alarm episodes and coverage over time."""
    async with dispatch.sessions() as s:
        query = (
            select(Incident)
            .where(col(Incident.received_at) >= start)
            .where(col(Incident.received_at) < end)
            .where(col(Incident.merged_into).is_(None))
        )
        if office is not None:
            query = query.where(col(Incident.office) == office)
        incidents = (await s.exec(query)).all()
        ids = [i.id for i in incidents]
        milestones = (
            (await s.exec(select(Milestone).where(col(Milestone.incident_id).in_(ids)))).all()
            if ids
            else []
        )
        alarms = (
            (
                await s.exec(
                    select(TimelineEntry.type)
                    .where(col(TimelineEntry.incident_id).in_(ids))
                    .where(col(TimelineEntry.type).in_(["NoResponderAvailable", "SlotUnfilled"]))
                )
            ).all()
            if ids
            else []
        )
        samples = (
            await s.exec(
                select(CoverageSample)
                .where(col(CoverageSample.at) >= start)
                .where(col(CoverageSample.at) < end)
                .where(col(CoverageSample.office) == (office or ALL))
                .order_by(col(CoverageSample.at), col(CoverageSample.stage))
            )
        ).all()
    stages: dict[str, dict[str, Any]] = {}
    for m in sorted(milestones, key=lambda m: m.position):
        entry = stages.setdefault(m.stage, {"met": 0, "breached": 0, "pending": 0, "times": []})
        entry[m.state if m.state in entry else "pending"] += 1
        if m.seconds is not None:
            entry["times"].append(m.seconds)
    alarm_counts = Counter(alarms)
    return {
        "office": office,
        "from": start,
        "to": end,
        "incidents": len(incidents),
        "by_category": dict(sorted(Counter(i.category for i in incidents).items())),
        "stages": [
            {
                "stage": stage,
                "met": e["met"],
                "breached": e["breached"],
                "pending": e["pending"],
                "compliance": (
                    e["met"] / (e["met"] + e["breached"]) if e["met"] + e["breached"] else None
                ),
                "median_s": quantile(e["times"], 0.5),
                "p90_s": quantile(e["times"], 0.9),
            }
            for stage, e in stages.items()
        ],
        "no_responder_episodes": alarm_counts["NoResponderAvailable"],
        "slot_unfilled_episodes": alarm_counts["SlotUnfilled"],
        "coverage": [
            {"at": c.at, "stage": c.stage, "zone_tier": c.zone_tier, "ratio": c.ratio}
            for c in samples
        ],
    }


SHIFT_COLUMNS = ("record", "key", "count", "compliance", "median_s", "p90_s", "at", "ratio")


def shift_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The shift report flattened for CSV: one row per total, category, stage and
    coverage sample, each saying in ``record`` which it is."""
    rows: list[dict[str, Any]] = [
        {"record": "total", "key": "incidents", "count": report["incidents"]},
        {
            "record": "total",
            "key": "no_responder_episodes",
            "count": report["no_responder_episodes"],
        },
        {
            "record": "total",
            "key": "slot_unfilled_episodes",
            "count": report["slot_unfilled_episodes"],
        },
    ]
    rows += [{"record": "category", "key": k, "count": n} for k, n in report["by_category"].items()]
    rows += [
        {
            "record": "stage",
            "key": st["stage"],
            "count": st["met"] + st["breached"],
            "compliance": st["compliance"],
            "median_s": st["median_s"],
            "p90_s": st["p90_s"],
        }
        for st in report["stages"]
    ]
    rows += [
        {"record": "coverage", "key": c["stage"], "at": c["at"].isoformat(), "ratio": c["ratio"]}
        for c in report["coverage"]
    ]
    return rows


async def record_coverage(
    sessions: SessionFactory,
    at: datetime,
    ratios: Mapping[tuple[str, str, str], float],
    *,
    keep: timedelta,
) -> None:
    """Keep one refresh's per-office ratios (all zone tiers together) and drop old samples."""
    async with sessions() as s:
        for (office, tier, stage), ratio in ratios.items():
            if tier == ALL:
                s.add(
                    CoverageSample(at=at, office=office, zone_tier=tier, stage=stage, ratio=ratio)
                )
        await s.exec(delete(CoverageSample).where(col(CoverageSample.at) < at - keep))
        await s.commit()
