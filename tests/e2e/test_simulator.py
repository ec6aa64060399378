"""The city simulator for a few seconds against the real stack: the correctness checks hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import AUTH_SECRET
from tools.devstack import Stack
from tools.simulator import (
    SimConfig,
    embedded_endpoints,
    report_text,
    scaled_dispatch_env,
    simulate,
)

TIME_SCALE = 20.0  # targets 3/9/15 s, offers expire after 1.5 s


@pytest.fixture(scope="module")
def fast_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """All four services, with dispatch's targets and offer timeout cut by the time scale."""
    running = Stack.on_free_ports(
        tmp_path_factory.mktemp("sim-stack"),
        extra_env={"AUTH_SECRET": AUTH_SECRET},
        service_env={"dispatch": scaled_dispatch_env(TIME_SCALE)},
    )
    running.secret = AUTH_SECRET
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()


@pytest.mark.timeout(90)
async def test_a_short_simulation_offers_nearest_books_nobody_twice_and_loses_nothing(
    fast_stack: Stack,
) -> None:
    config = SimConfig(
        duration_s=6.0,
        responders_per_kind=5,
        reports_per_s=1.5,
        accept_probability=0.6,
        decline_share=0.5,
        time_scale=TIME_SCALE,
        ping_interval_s=0.5,
        offer_timeout_s=30.0 / TIME_SCALE,
        drain_timeout_s=30.0,
        seed=9,
        live=False,
        cleanup=False,
    )
    result = await simulate(embedded_endpoints(fast_stack), config)
    checks = result.checks

    assert result.reports, "no report was accepted"
    assert checks.offers_checked > 0, "no offer reached a responder's stream"
    assert checks.nearest_violations == []
    assert checks.double_bookings == []
    assert checks.lost_reports == []
    assert checks.waited_past_last_deadline, "milestones still pending when the drain ended"
    assert checks.unresolved_milestones == []
    assert checks.incidents_checked > 0
    assert "all" in result.table
    # What make demo prints: volunteers first on scene, and the coverage curve it watched.
    text = report_text(result)
    assert "volunteers first on scene: " in text
    assert result.coverage, "the coverage map was never read"
    assert "coverage T3 over time: first " in text
