"""Which stack a run drives: the running one (``make run``), or its own on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from shared.auth import Role
from tools.simulator.agents import simulate
from tools.simulator.model import Endpoints, SimConfig, SimResult
from tools.simulator.rules import OFFER_TIMEOUT_S, RETRY_INTERVAL_S, STAGE_TARGETS_S
from tools.simulator.town import ROOT

RUN_DIR = ROOT / ".run"


def scaled_dispatch_env(time_scale: float) -> dict[str, str]:
    """Dispatch settings for a stack that runs ``time_scale`` times faster than life."""
    targets = {stage: max(1, round(s / time_scale)) for stage, s in STAGE_TARGETS_S.items()}
    return {
        "TARGET_OVERRIDES_S": json.dumps(targets),
        "OFFER_TIMEOUT_S": str(round(OFFER_TIMEOUT_S / time_scale, 2)),
        "RETRY_INTERVAL_S": str(max(0.5, round(RETRY_INTERVAL_S / time_scale, 2))),
    }


SERVICES = ("intake", "dispatch", "volunteer-locator", "notification")


def parse_policy(text: str) -> dict[str, dict[str, str]]:
    """``[service:]VAR=VALUE[,...]`` (service: dispatch unless named) as env per service.

    For example ``OFFER_TIMEOUT_S=1.5`` or ``volunteer-locator:CLAIM_CANDIDATES=1``.
    """
    out: dict[str, dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, _, assignment = part.rpartition(":")
        name, eq, value = assignment.partition("=")
        service = service or "dispatch"
        if not eq or not name or service not in SERVICES:
            raise ValueError(f"not a policy setting: {part!r} (want [service:]VAR=VALUE)")
        out.setdefault(service, {})[name.strip().upper()] = value.strip()
    return out


def running_stack_ready(urls: Mapping[str, str]) -> bool:
    """Whether every service answers ``/readyz`` at these URLs."""
    with httpx.Client(timeout=1.0) as client:
        for url in urls.values():
            try:
                if client.get(f"{url}/readyz").status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


def dev_secret() -> str | None:
    """The running stack's signing secret: ``AUTH_SECRET`` or ``.run/auth_secret``."""
    if os.environ.get("AUTH_SECRET"):
        return os.environ["AUTH_SECRET"]
    path = RUN_DIR / "auth_secret"
    return path.read_text().strip() if path.exists() else None


def run_embedded(
    config: SimConfig, policy: Mapping[str, Mapping[str, str]] | None = None
) -> SimResult:
    """Start an own stack on free ports with scaled targets, simulate, stop it.

    ``policy`` adds settings per service (environment variables), over the scaled ones.
    """
    from tools.devstack import Stack  # only needed here; it pulls in the broker tooling

    run_dir = Path(tempfile.mkdtemp(prefix="qrd-sim-"))
    service_env: dict[str, dict[str, str]] = {"dispatch": scaled_dispatch_env(config.time_scale)}
    for service, env in (policy or {}).items():
        service_env.setdefault(service, {}).update(env)
    stack = Stack.on_free_ports(run_dir, service_env=service_env)
    print(
        f"Starting an own stack on free ports (time scale {config.time_scale:g}: targets "
        f"{service_env['dispatch']['TARGET_OVERRIDES_S']}, logs in {run_dir}) …",
        flush=True,
    )
    try:
        stack.start(timeout=120)
        print(f"Console: {stack.url('dispatch')}/console", flush=True)
        return asyncio.run(simulate(embedded_endpoints(stack), config))
    finally:
        stack.stop()


def embedded_endpoints(stack: Any) -> Endpoints:
    """The endpoints and tokens of a :class:`tools.devstack.Stack`."""
    return Endpoints(
        intake=stack.url("intake"),
        dispatch=stack.url("dispatch"),
        locator=stack.url("volunteer-locator"),
        notification=stack.url("notification"),
        dispatcher_token=stack.token(Role.DISPATCHER),
        service_token=stack.token(Role.SERVICE),
    )
