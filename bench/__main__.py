"""``make bench``: every benchmark on the embedded stack, results into docs/benchmarks.md.

- dispatch latency, 202 → offer on the stream, as a curve over 5-80 reports/s with
  10,000 responders pinging every 5 s, its knee, a surge (100/s for 20 s) and a per-hop
  breakdown, beside the raw broker round trip and a brute-force scan (bench/dispatch.py,
  plot in docs/dispatch-curve.png);
- location ingest, freshness lag, nearest and claim over 100,000 responders, beside a
  brute-force scan and the broker round trip (bench/locator.py);
- coverage refresh, CPU per recomputation with 10,000 responders over 20 km x 20 km,
  beside a brute-force scan (bench/coverage.py).

``--quick`` runs smaller versions (a smoke run; its figures are not the §8 settings).
Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from bench import coverage, dispatch, locator, scaleout
from bench.common import REPORT, write_section


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and write their sections."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, shorter runs")
    parser.add_argument(
        "--only", choices=("dispatch", "locator", "coverage", "scaleout"), default=None
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=None, help="one rate (reports/s) instead of the curve"
    )
    parser.add_argument("--no-surge", action="store_true", help="the curve without the surge")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    if args.only in (None, "dispatch"):
        print("dispatch latency …", flush=True)
        curve = args.rate is None
        body = dispatch.run(
            responders=2_000 if args.quick else 10_000,
            watched=200 if args.quick else 500,
            rates=((5.0, 20.0, 60.0) if args.quick else dispatch.CURVE_RATES)
            if curve
            else (args.rate,),
            seconds=8.0 if args.quick else 20.0,
            surge=curve and not args.no_surge,
            seed=args.seed,
            plot=None if args.no_write else dispatch.PLOT,
        )
        print(body, flush=True)
        if not args.no_write:
            write_section("Dispatch latency", body)

    if args.only in (None, "locator"):
        print("volunteer locator …", flush=True)
        if args.quick:
            text = asyncio.run(locator.run(20_000, 500, 200, args.seed))
        else:
            text = asyncio.run(locator.run(100_000, 2_000, 500, args.seed))
        print(text, flush=True)
        if not args.no_write:
            locator.write_section(text)

    if args.only in (None, "coverage"):
        print("coverage refresh …", flush=True)
        body = coverage.run(
            responders=10_000,
            side_m=20_000.0,
            repeats=5 if args.quick else 30,
            baseline_repeats=1 if args.quick else 3,
            seed=args.seed,
        )
        print(body, flush=True)
        if not args.no_write:
            write_section(coverage.TITLE, body)

    if args.only in (None, "scaleout"):
        print("scale-out correctness …", flush=True)
        body = scaleout.run(
            watched=80 if args.quick else 150,
            rate=5.0 if args.quick else 10.0,
            seconds=10.0 if args.quick else 20.0,
        )
        print(body, flush=True)
        if not args.no_write:
            write_section(scaleout.TITLE, body)

    print(f"done in {time.perf_counter() - started:.0f}s; results in {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
