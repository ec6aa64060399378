"""docs/metrics.md and the services' ``/metrics`` agree both ways: every documented
metric is exported with its documented type and labels, and every exported metric
is documented. Operators build alerts and dashboards from that page."""

from __future__ import annotations

from collections import defaultdict

from tests.harness import Infra
from tests.integration.all_services import (
    Family,
    all_services,
    declared_labels,
    post_a_report,
    scrape,
)
from tests.metrics_catalogue import Metric, catalogue

# Labels the exposition adds to histogram series, not declared by the metric.
SERIES_LABELS = frozenset({"le"})


def family_name(metric: Metric) -> str:
    """The family name the text parser gives a documented metric."""
    return metric.name.removesuffix("_total") if metric.type == "counter" else metric.name


def is_created_companion(name: str, family: Family, documented: dict[str, Metric]) -> bool:
    """``x_created``: the start time prometheus_client exposes for counters and histograms."""
    base = documented.get(name.removesuffix("_created"))
    return (
        name.endswith("_created")
        and family.type == "gauge"
        and base is not None
        and base.type in {"counter", "histogram"}
    )


def test_the_catalogue_lists_the_1_3_5_metrics_first() -> None:
    names = [m.name for m in catalogue()]
    assert names[:3] == [
        "dispatch_response_seconds",
        "dispatch_targets_met_total",
        "dispatch_targets_breached_total",
    ]
    assert len(names) == len(set(names)), "a metric is documented twice"
    assert all(m.meaning for m in catalogue())


async def test_catalogue_and_metrics_endpoints_agree(infra: Infra) -> None:
    documented_by_service: dict[str, dict[str, Metric]] = defaultdict(dict)
    for metric in catalogue():
        documented_by_service[metric.service][family_name(metric)] = metric

    async with all_services(infra) as services:
        await post_a_report(services)
        exposed = {name: await scrape(app) for name, app in services.items()}
        declared = {name: declared_labels(app.app.state.registry) for name, app in services.items()}

    assert set(exposed) == set(documented_by_service)
    problems: list[str] = []
    for service, families in exposed.items():
        documented = documented_by_service[service]
        for name, family in families.items():
            if name.startswith(("process_", "python_", "platform_")):
                problems.append(f"{service}: default collector {name} is registered")
            elif name in documented or is_created_companion(name, family, documented):
                continue
            else:
                problems.append(
                    f"{service}: exports {name} ({family.type}), not in docs/metrics.md"
                )
        for name, metric in documented.items():
            found = families.get(name)
            if found is None:
                problems.append(f"{service}: {metric.name} is documented but not exported")
                continue
            if found.type != metric.type:
                problems.append(f"{service}: {metric.name} is a {found.type}, not a {metric.type}")
            if declared[service].get(name) != metric.labels:
                problems.append(
                    f"{service}: {metric.name} declares labels "
                    f"{sorted(declared[service].get(name, ()))}, documented {sorted(metric.labels)}"
                )
            for sample in found.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = set(sample.labels) - SERIES_LABELS
                if labels != metric.labels:
                    problems.append(
                        f"{service}: {sample.name} has labels {sorted(labels)}, "
                        f"documented {sorted(metric.labels)}"
                    )
                    break
    assert not problems, "\n".join(problems)

    # The traffic gave the labelled metrics real samples, so the label check above
    # read them off the wire as well as off the registry.
    sampled = {
        name
        for families in exposed.values()
        for name, family in families.items()
        if any(not s.name.endswith("_created") for s in family.samples)
    }
    assert {
        "intake_reports",
        "intake_http_requests",
        "dispatch_incidents_opened",
        "dispatch_http_requests",
        "volunteer_locator_responders_available",
        "notification_http_requests",
    } <= sampled
