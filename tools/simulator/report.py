"""The end-of-run summary: the 1-3-5 compliance table and the checks' verdict."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from tools.simulator.model import SimResult


def compliance_table(incidents: Iterable[Mapping[str, Any]]) -> str:
    """Targets met and breached by stage and category, with the median seconds when met."""
    cells: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    stages: list[str] = []
    for incident in incidents:
        if incident["status"] == "merged":
            continue
        for m in incident["milestones"]:
            if m["stage"] not in stages:
                stages.append(m["stage"])
            cells[(incident["category"], m["stage"])].append(m)
            cells[("all", m["stage"])].append(m)
    categories = [*sorted({c for c, _ in cells if c != "all"}), "all"]

    def cell(ms: list[Mapping[str, Any]]) -> str:
        if not ms:
            return "-"
        met = [m for m in ms if m["state"] == "met"]
        breached = sum(1 for m in ms if m["state"] == "breached")
        pending = len(ms) - len(met) - breached
        text = f"{len(met)}/{len(ms)} met"
        if met:
            text += f", {statistics.median(m['seconds'] for m in met):.0f}s"
        if pending:
            text += f" ({pending} pending)"
        return text

    width = 26
    lines = [
        "1-3-5 compliance by stage and category (met/total, median seconds when met)",
        f"{'category':<16}" + "".join(f"{s:<{width}}" for s in stages),
    ]
    for category in categories:
        row = "".join(f"{cell(cells[(category, s)]):<{width}}" for s in stages)
        lines.append(f"{category:<16}{row}")
    return "\n".join(lines)


def report_text(result: SimResult) -> str:
    """The end-of-run summary: the table and the checks."""
    c, k = result.checks, result.counters
    outcome = Counter(o.outcome for o in result.offers)
    lines = [
        "",
        result.table,
        "",
        f"reports {len(result.reports)}, incidents {len(result.incidents)}, "
        f"offers {len(result.offers)} ({', '.join(f'{n} {o}' for o, n in outcome.items())}), "
        f"pings {k['pings']}",
        "Correctness:",
        f"  nearest eligible free responder  {len(c.nearest_violations)} violations "
        f"in {c.offers_checked} offers",
        f"  double bookings                  {len(c.double_bookings)}",
        f"  lost reports                     {len(c.lost_reports)} of {c.reports_checked}",
        f"  unresolved milestones            {len(c.unresolved_milestones)}"
        + ("" if c.waited_past_last_deadline else f" ({c.not_yet_due} pending, not yet due)"),
    ]
    for problem in (
        c.nearest_violations + c.double_bookings + c.lost_reports + c.unresolved_milestones
    )[:20]:
        lines.append(f"    {problem}")
    lines.append("ALL CHECKS PASSED" if c.passed else "CHECKS FAILED")
    return "\n".join(lines)
