"""The Grafana dashboards and the Prometheus rules ask only for metrics the services
really export: the names in docs/metrics.md, which
tests/integration/test_metrics_catalogue.py checks against every service's
``/metrics``, plus the recording rules' names. Prometheus itself evaluates every
expression in tests/integration/test_dashboards_evaluate.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.metrics_catalogue import exported_series, recorded_series, rule_groups
from tests.promql import label_values_metric, selected, unknown_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Prometheus's own series about each scrape.
PROMETHEUS_SERIES = frozenset({"up"})


def known() -> frozenset[str]:
    return exported_series() | recorded_series() | PROMETHEUS_SERIES


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query target of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield variable["name"], query["query"] if isinstance(query, dict) else str(query)


def test_both_dashboards_are_provisioned() -> None:
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert titles == {"Response times", "Operations"}
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_prometheus(path: Path) -> None:
    dashboard = load(path)
    queried = [p for p in panels(dashboard) if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel means"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_ask_only_for_exported_metrics(path: Path) -> None:
    dashboard = load(path)
    names = known()
    problems = [
        f"{where}: {name}"
        for where, expr in expressions(dashboard)
        for name in unknown_names(expr, names)
    ]
    for variable, query in variable_queries(dashboard):
        metric = label_values_metric(query)
        if metric is None:
            problems.append(f"variable {variable}: not a label_values(metric, label) query")
        elif metric not in names:
            problems.append(f"variable {variable}: {metric}")
    assert not problems, "unknown metrics:\n" + "\n".join(problems)


def test_rules_ask_only_for_exported_metrics() -> None:
    names = known()
    problems = [
        f"{rule.get('record') or rule['alert']}: {name}"
        for group in rule_groups()
        for rule in group["rules"]
        for name in unknown_names(rule["expr"], names)
    ]
    assert not problems, "unknown metrics:\n" + "\n".join(problems)


def test_the_response_dashboard_covers_every_stage_signal() -> None:
    (response,) = [load(p) for p in DASHBOARDS if load(p)["title"] == "Response times"]
    used = set().union(*(selected(expr).names for _, expr in expressions(response)))
    assert {
        "dispatch_response_seconds_bucket",
        "dispatch_latency_seconds_bucket",
        "grid_category_stage:dispatch_targets_met:increase1h",
        "grid_category_stage:dispatch_targets_breached:increase5m",
        "grid_category_stage:dispatch_targets_decided:increase24h",
    } <= used
    assert {v["name"] for v in response["templating"]["list"]} == {"grid", "category"}


def test_the_name_check_catches_a_typo() -> None:
    names = known()
    assert list(unknown_names("sum(rate(dispatch_offer_total[5m]))", names)) == [
        "dispatch_offer_total"
    ]
    assert (
        list(
            unknown_names('max by (kind) (volunteer_locator_responders_available{kind="x"})', names)
        )
        == []
    )
    assert list(unknown_names('{__name__=~"nothing_.+"}', names)) == ["{__name__=~'nothing_.+'}"]
