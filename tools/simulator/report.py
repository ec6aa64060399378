"""The end-of-run summary: the 1-3-5 compliance table and the checks' verdict."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def volunteers_first(incidents: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(incidents whose first unit on scene was a volunteer, incidents with anyone on scene)."""
    first = arrived = 0
    for incident in incidents:
        if incident["status"] == "merged":
            continue
        on_scene = [u for u in incident["units"] if u.get("on_scene_at")]
        if not on_scene:
            continue
        arrived += 1
        if min(on_scene, key=lambda u: str(u["on_scene_at"]))["kind"] == "volunteer":
            first += 1
    return first, arrived


def alarm_counts(incidents: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(incidents that went red: nobody coming, incidents with an amber notice)."""
    red = amber = 0
    for incident in incidents:
        types = {t["type"] for t in incident.get("timeline", [])}
        red += "NoResponderAvailable" in types
        amber += "SlotUnfilled" in types
    return red, amber


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage with the counts."""
    return f"{100 * part / whole:.0f}% ({part}/{whole})" if whole else "- (0/0)"


def coverage_line(samples: Sequence[tuple[float, float]], *, width: int = 12) -> str:
    """The T3 coverage ratio over the run: first, min, mean, last, and a coarse curve."""
    if not samples:
        return "coverage T3 over time: no map yet (the locator had not answered)"
    ratios = [r for _, r in samples]
    step = max(1, len(ratios) // width)
    curve = " ".join(f"{100 * r:.0f}" for r in ratios[::step][:width])
    return (
        f"coverage T3 over time: first {100 * ratios[0]:.0f}%, min {100 * min(ratios):.0f}%, "
        f"mean {100 * statistics.fmean(ratios):.0f}%, last {100 * ratios[-1]:.0f}% "
        f"[{curve}] ({len(ratios)} samples)"
    )


def stage_met(incidents: Iterable[Mapping[str, Any]], stage: str) -> tuple[int, int]:
    """(met, judged) for one stage over the run's incidents."""
    met = judged = 0
    for incident in incidents:
        if incident["status"] == "merged":
            continue
        for m in incident["milestones"]:
            if m["stage"] == stage and m["state"] in ("met", "breached"):
                judged += 1
                met += m["state"] == "met"
    return met, judged


def side_by_side(runs: Sequence[tuple[str, SimResult]]) -> str:
    """Two or more policies' runs on the same seeded town, one column each."""
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, cell: Callable[[SimResult], str]) -> None:
        rows.append((name, [cell(r) for _, r in runs]))

    row("reports", lambda r: str(len(r.reports)))
    row("offers", lambda r: str(len(r.offers)))
    for stage in ("T1", "T3", "T5"):
        rows.append(
            (f"{stage} met", [share(*stage_met(r.incidents.values(), stage)) for _, r in runs])
        )
    row("volunteers first", lambda r: share(*volunteers_first(r.incidents.values())))
    row("red (nobody coming)", lambda r: str(alarm_counts(r.incidents.values())[0]))
    row("amber (slot unfilled)", lambda r: str(alarm_counts(r.incidents.values())[1]))
    row(
        "coverage T3 mean",
        lambda r: f"{100 * statistics.fmean(x for _, x in r.coverage):.0f}%" if r.coverage else "-",
    )
    row("checks", lambda r: "passed" if r.checks.passed else "FAILED")
    width = max(24, *(len(name) + 2 for name, _ in runs))
    lines = [
        "Policies side by side (same seeded town)",
        f"{'':<24}" + "".join(f"{name:<{width}}" for name, _ in runs),
    ]
    lines += [f"{name:<24}" + "".join(f"{c:<{width}}" for c in cells) for name, cells in rows]
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
        "volunteers first on scene: " + share(*volunteers_first(result.incidents.values())),
        coverage_line(result.coverage),
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
