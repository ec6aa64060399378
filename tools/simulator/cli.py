"""The command line: ``python -m tools.simulator`` (``make demo``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace

from shared.auth import Role, mint_token
from tools.simulator.agents import simulate
from tools.simulator.model import Endpoints, SimConfig, SimResult
from tools.simulator.report import report_text, side_by_side
from tools.simulator.rules import OFFER_TIMEOUT_S
from tools.simulator.stack import dev_secret, parse_policy, run_embedded, running_stack_ready

DEFAULT_URLS = {
    "intake": "http://127.0.0.1:8001",
    "dispatch": "http://127.0.0.1:8002",
    "volunteer-locator": "http://127.0.0.1:8003",
    "notification": "http://127.0.0.1:8004",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.simulator",
        description="Drive the system with a synthetic town over its public API.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--embedded",
        action="store_true",
        help="start an own stack on free ports with scaled (short) targets",
    )
    where.add_argument(
        "--running", action="store_true", help="use the running stack (make run); fail if absent"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of reports")
    parser.add_argument("--responders", type=int, default=15, help="responders of each kind")
    parser.add_argument("--rate", type=float, default=0.5, help="reports per second (Poisson)")
    parser.add_argument("--accept", type=float, default=0.8, help="probability to accept")
    parser.add_argument(
        "--decline-share",
        type=float,
        default=0.5,
        help="of the rest, share declined (else ignored)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="simulated seconds per real second (default: 10 embedded, 1 running)",
    )
    parser.add_argument("--ping-interval", type=float, default=1.0)
    parser.add_argument("--drain-timeout", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plans", default=None, help="the stack's PLANS_PATH, if not the default")
    for name, url in DEFAULT_URLS.items():
        parser.add_argument(f"--{name}-url", default=url)
    parser.add_argument("--dispatcher-token", default=None)
    parser.add_argument("--service-token", default=None)
    parser.add_argument("--offer-timeout", type=float, default=None, help="the stack's, seconds")
    parser.add_argument("--no-cleanup", action="store_true")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar="POLICY",
        default=None,
        help="run two policies on the same seeded town, each on its own embedded stack, and "
        "print them side by side; a policy is [service:]VAR=VALUE[,...], e.g. "
        "'OFFER_TIMEOUT_S=3' 'OFFER_TIMEOUT_S=1' or 'volunteer-locator:CLAIM_CANDIDATES=1'",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; exit 1 if a correctness check failed."""
    args = parse_args(argv)
    urls = {name: getattr(args, f"{name.replace('-', '_')}_url") for name in DEFAULT_URLS}
    embedded = args.embedded or (not args.running and not running_stack_ready(urls))
    if args.running and not running_stack_ready(urls):
        print(f"no running stack answers at {urls['intake']} etc.; try make run", file=sys.stderr)
        return 2
    scale = args.time_scale or (10.0 if embedded else 1.0)
    config = SimConfig(
        duration_s=args.duration,
        responders_per_kind=args.responders,
        reports_per_s=args.rate,
        accept_probability=args.accept,
        decline_share=args.decline_share,
        time_scale=scale,
        ping_interval_s=args.ping_interval,
        drain_timeout_s=args.drain_timeout or (60.0 if embedded else 90.0),
        offer_timeout_s=args.offer_timeout or OFFER_TIMEOUT_S / (scale if embedded else 1.0),
        plans_path=args.plans,
        seed=args.seed,
        cleanup=not args.no_cleanup,
    )
    if args.compare:
        if args.running:
            print("--compare starts its own stacks; drop --running", file=sys.stderr)
            return 2
        return compare(config, args.compare)
    if embedded:
        return finish(run_embedded(config))
    secret = dev_secret()
    if secret is None and not (args.dispatcher_token and args.service_token):
        print("no .run/auth_secret or AUTH_SECRET: pass --dispatcher-token and --service-token")
        return 2
    endpoints = Endpoints(
        intake=urls["intake"],
        dispatch=urls["dispatch"],
        locator=urls["volunteer-locator"],
        notification=urls["notification"],
        dispatcher_token=args.dispatcher_token
        or mint_token(secret=secret or "", role=Role.DISPATCHER, subject="simulator-desk"),
        service_token=args.service_token
        or mint_token(secret=secret or "", role=Role.SERVICE, subject="simulator-gateway"),
    )
    print(
        f"Simulating against the running stack at {urls['intake']} … (console: "
        f"{urls['dispatch']}/console)"
    )
    return finish(asyncio.run(simulate(endpoints, config)))


def compare(config: SimConfig, policies: Sequence[str]) -> int:
    """Each policy on its own embedded stack, same seed; both reports, then side by side."""
    try:
        parsed = [parse_policy(p) for p in policies]
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    runs: list[tuple[str, SimResult]] = []
    for name, policy in zip(policies, parsed, strict=True):
        timeout = policy.get("dispatch", {}).get("OFFER_TIMEOUT_S")
        run_config = replace(config, offer_timeout_s=float(timeout)) if timeout else config
        print(f"Policy {name} …", flush=True)
        result = run_embedded(run_config, policy)
        print(report_text(result), flush=True)
        runs.append((name, result))
    print("\n" + side_by_side(runs), flush=True)
    return 0 if all(r.checks.passed for _, r in runs) else 1


def finish(result: SimResult) -> int:
    """Print the summary; the exit code says whether the checks passed."""
    print(report_text(result), flush=True)
    return 0 if result.checks.passed else 1
