"""The shift report's figures on a small seeded shift, and CSV cells made formula-safe."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.dispatch import service
from services.dispatch.review import quantile, record_coverage, safe_cell, shift_report
from shared.events import ResponderOffered
from tests.unit.dispatch_support import HERE, engine_at, north


def test_text_that_a_spreadsheet_would_run_is_defused() -> None:
    assert [safe_cell(v) for v in ("=1+1", "+1", "-2", "@SUM(A1)", "ok", 3.5, None)] == [
        "'=1+1",
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "ok",
        3.5,
        "",
    ]


def test_quantiles_interpolate_between_ranks() -> None:
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([20.0, 40.0], 0.5) == 30.0
    assert quantile([20.0, 40.0], 0.9) == 38.0


async def test_a_shift_report_counts_categories_compliance_times_and_alarms(
    tmp_path: Path,
) -> None:
    async with engine_at(tmp_path / "dispatch.db", offer_timeout_s=120) as engine:
        start = engine.clock.now()
        first = engine.locator.add("volunteer", *north(HERE, 100))
        second = engine.locator.add("volunteer", *north(HERE, 5000))
        await engine.report("other")
        await engine.report("fraud", north(HERE, 2000))
        engine.clock.advance(20)
        offers = await engine.events(ResponderOffered)
        by_responder = {o.responder_id: o for o in offers if isinstance(o, ResponderOffered)}
        await service.accept_offer(
            dispatch=engine.dispatch,
            offer_id=by_responder[first].offer_id,
            responder_id=str(first),
        )
        engine.clock.advance(20)
        await service.accept_offer(
            dispatch=engine.dispatch,
            offer_id=by_responder[second].offer_id,
            responder_id=str(second),
        )
        await engine.report("other", north(HERE, 4000))  # nobody left: red
        await engine.tick(120)  # its T1 passes unmet
        ratios = {("all", "all", "T3"): 0.75, ("all", "key", "T3"): 0.5}
        await record_coverage(
            engine.dispatch.sessions, engine.clock.now(), ratios, keep=timedelta(days=1)
        )

        report = await shift_report(
            dispatch=engine.dispatch,
            office=None,
            start=start,
            end=engine.clock.now() + timedelta(seconds=1),
        )

    assert report["incidents"] == 3
    assert report["by_category"] == {"fraud": 1, "other": 2}
    t1 = next(s for s in report["stages"] if s["stage"] == "T1")
    assert (t1["met"], t1["breached"]) == (2, 1)
    assert t1["compliance"] == 2 / 3
    assert t1["median_s"] == 30.0
    assert t1["p90_s"] == 38.0
    assert report["no_responder_episodes"] == 1
    assert [(c["stage"], c["ratio"]) for c in report["coverage"]] == [("T3", 0.75)]
