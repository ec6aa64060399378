"""All four services served in-process on the real broker and Redis, and their
``/metrics`` read back as metric families."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.harness import Infra, RunningApp, eventually
from tests.integration.dispatch_stack import running_stack
from tests.integration.notification_support import notification


@asynccontextmanager
async def all_services(infra: Infra) -> AsyncIterator[dict[str, RunningApp]]:
    """Intake, dispatch, the volunteer-locator and notification, keyed by service name."""
    async with running_stack(infra) as stack, notification(infra) as notifier:
        yield {
            "intake": stack.intake,
            "dispatch": stack.dispatch,
            "volunteer-locator": stack.locator,
            "notification": notifier,
        }


async def post_a_report(services: Mapping[str, RunningApp]) -> None:
    """One citizen's report, followed until dispatch has opened its incident, so the
    labelled report, incident and consumer metrics have samples."""
    async with services["intake"].client() as client:
        answer = await client.post(
            "/v1/reports", json={"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}
        )
    assert answer.status_code == 202, answer.text

    async def incident_counted() -> bool:
        families = await scrape(services["dispatch"])
        return any(s.value >= 1 for s in families["dispatch_incidents_opened"].samples)

    await eventually(incident_counted, timeout=15)


async def scrape(app: RunningApp) -> dict[str, Family]:
    """The app's ``/metrics``, parsed: family name (counters without ``_total``) to family."""
    async with app.client() as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        family.name: Family(family.name, family.type, list(family.samples))
        for family in text_string_to_metric_families(answer.text)
    }


@dataclass(frozen=True)
class Family:
    """One metric family as exposed: its name, type and samples."""

    name: str
    type: str
    samples: list[Sample]


def declared_labels(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Label names each metric in the registry declares, by family name.

    A labelled metric exposes no sample until something is counted, so its label
    names cannot be read from ``/metrics`` alone; prometheus_client keeps them on the
    metric object (``_labelnames``, stable since its first release).
    """
    # The registry has no public way to list its collectors; collect() would give
    # samples only.
    collectors = set(registry._collector_to_names)
    declared: dict[str, frozenset[str]] = {}
    for collector in collectors:
        assert isinstance(collector, MetricWrapperBase), f"unexpected collector {collector!r}"
        for family in collector.describe():
            declared[family.name] = frozenset(collector._labelnames)
    return declared
