"""The metrics catalogue (docs/metrics.md) read as data, and the recording rules'
names read from deploy/prometheus/rules/.

The integration test checks the catalogue against what the services' ``/metrics``
really expose, so the dashboards test can trust it as the list of exported names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "metrics.md"
RULES = ROOT / "deploy" / "prometheus" / "rules"

TYPES = frozenset({"counter", "gauge", "histogram"})
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PREFIXES = {
    "intake_": "intake",
    "dispatch_": "dispatch",
    "volunteer_locator_": "volunteer-locator",
    "notification_": "notification",
}
_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_][a-z0-9_]*)`\s*\|(?P<rest>.*)\|\s*$")
_LABEL = re.compile(r"`([a-z_][a-z0-9_]*)`")


@dataclass(frozen=True)
class Metric:
    """One documented metric: the name one queries, its type and its label names."""

    name: str
    type: str
    labels: frozenset[str]
    meaning: str

    @property
    def service(self) -> str:
        """The service that exports it, from its name's prefix."""
        for prefix, service in PREFIXES.items():
            if self.name.startswith(prefix):
                return service
        raise ValueError(f"{self.name} does not start with a service's name")

    @property
    def series(self) -> frozenset[str]:
        """Every series name this metric puts in Prometheus."""
        base = self.name.removesuffix("_total")
        names = {self.name}
        if self.type == "histogram":
            names |= {self.name + suffix for suffix in HISTOGRAM_SERIES}
        if self.type in {"counter", "histogram"}:
            names.add(base + "_created")
        return frozenset(names)


def parse_catalogue(text: str) -> list[Metric]:
    """Every table row ``| `name` | type | `label`, ... or — | meaning |``."""
    metrics: list[Metric] = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if match is None:
            continue
        cells = [c.strip() for c in match["rest"].split("|")]
        if len(cells) < 3 or cells[0] not in TYPES:
            continue  # another table (the recording rules), not a metric row
        labels = frozenset(_LABEL.findall(cells[1]))
        if not labels and cells[1] not in {"—", "-", ""}:
            raise ValueError(f"unreadable labels for {match['name']}: {cells[1]!r}")
        metrics.append(Metric(match["name"], cells[0], labels, "|".join(cells[2:]).strip()))
    return metrics


def catalogue() -> list[Metric]:
    """The documented metrics, in the order of the page."""
    return parse_catalogue(CATALOGUE.read_text())


def exported_series() -> frozenset[str]:
    """Every series name the services export, per the (tested) catalogue."""
    return frozenset(name for metric in catalogue() for name in metric.series)


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group in deploy/prometheus/rules/."""
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def recorded_series() -> frozenset[str]:
    """The names the recording rules define."""
    return frozenset(
        rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule
    )
