"""A short fault-injection run (``make chaos`` in under a minute): with a service
killed, the broker restarted empty and Redis stalled while reports arrive, nothing is
lost, nobody is booked twice and every milestone settles."""

from __future__ import annotations

import pytest

from tools.chaos import ChaosConfig, run

SHORT = ChaosConfig(
    duration_s=40.0,
    reports_per_s=1.0,
    responders_per_kind=5,
    faults=("kill -9 dispatch", "broker restart", "redis stall"),
    stall_s=4.0,
    seed=3,
    drain_timeout_s=60.0,
    live=False,
)


@pytest.mark.timeout(600)
def test_a_short_chaos_run_loses_nothing() -> None:
    plan, found, _ = run(SHORT)

    assert [f.name for f in plan if f.ended_at] == [f.name for f in plan]
    assert all("failed" not in f.note for f in plan), [f.note for f in plan]
    assert found.reports > 0
    assert found.offers > 0
    assert found.failures() == {}
