"""Scale-out correctness on PostgreSQL: two dispatch instances in dispatch's consumer group
and two locator instances in the locator's, under a steady report rate.

Two cores cannot show scaling, so this shows what must hold when instances are added:
0 double bookings (no responder held by two offers at once, read from dispatch's
tables) and 0 lost reports (every accepted report ends offered or flagged). Each
dispatch instance claims through its own locator instance; both share Redis, the broker
and the database, as replicas would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import machine
from bench.dispatch import (
    CITIZEN_ADDRESSES,
    SPACING_M,
    Bench,
    Step,
    Watched,
    listen,
    ping_forever,
    run_step,
    scrape_all,
)
from bench.locator import CENTRE, Placed
from services.volunteer_locator.geo import offset
from shared.auth import Role
from tools.devstack import DEFAULT_SERVICES, ServiceSpec, Stack
from tools.embedded import free_port, start_postgres
from tools.simulator import citizen_addresses

# The bench town is not the demo district: intake's service-area check is off (intake
# still refuses coordinates the index cannot hold).
BENCH_AREA_OFF = ""

TITLE = "Scale-out correctness"


@dataclass
class ScaleOut:
    """What the run saw."""

    step: Step
    reports: int
    lost: int
    double_bookings: int
    handled_by: dict[str, float]
    claims_by: dict[str, float]


def services() -> tuple[ServiceSpec, ...]:
    """The four services, dispatch and the locator twice, on free ports."""
    specs = [ServiceSpec(s.name, s.module, free_port()) for s in DEFAULT_SERVICES]
    by_name = {s.name: s for s in specs}
    specs.append(ServiceSpec("dispatch-2", by_name["dispatch"].module, free_port()))
    specs.append(
        ServiceSpec("volunteer-locator-2", by_name["volunteer-locator"].module, free_port())
    )
    return tuple(specs)


async def register(stack: Stack, count: int) -> list[Watched]:
    """``count`` on-duty volunteers on a grid ``SPACING_M`` apart, through the API."""
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    base = stack.url("volunteer-locator")
    side = int(count**0.5) + 1
    out: list[Watched] = []
    async with httpx.AsyncClient(base_url=base, headers=desk, timeout=30) as client:
        for i in range(count):
            at = offset(
                CENTRE,
                north_m=(i // side) * SPACING_M * 1.25,
                east_m=(i % side) * SPACING_M * 1.25,
            )
            body = {"name": "bench", "kind": "volunteer", "skills": [], "travel_mode": "foot"}
            answer = (await client.post("/v1/responders", json=body)).json()
            responder_id = str(answer["responder_id"])
            await client.put(f"/v1/responders/{responder_id}/duty", json={"on_duty": True})
            placed = Placed(responder_id, "volunteer", "foot", at)
            out.append(Watched(placed, stack.token(Role.RESPONDER, responder_id)))
    return out


async def check(database_url: str, report_ids: list[str]) -> tuple[int, int]:
    """(lost reports, double bookings) from dispatch's tables."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT r.report_id::text, i.no_responder_since IS NOT NULL,"
                        " EXISTS (SELECT 1 FROM dispatch.offers o WHERE o.incident_id = i.id)"
                        " FROM dispatch.incident_reports r"
                        " JOIN dispatch.incidents i ON i.id = r.incident_id"
                    )
                )
            ).all()
            doubles = await conn.scalar(
                text(
                    "SELECT COUNT(*) FROM dispatch.offers a JOIN dispatch.offers b"
                    " ON a.responder_id = b.responder_id AND a.id < b.id"
                    " AND a.offered_at < COALESCE(b.answered_at, 'infinity')"
                    " AND b.offered_at < COALESCE(a.answered_at, 'infinity')"
                )
            )
    finally:
        await engine.dispose()
    done = {str(uuid.UUID(r[0])) for r in rows if r[1] or r[2]}
    lost = sum(1 for r in report_ids if str(uuid.UUID(r)) not in done)
    return lost, int(doubles or 0)


async def measure(
    stack: Stack, database_url: str, *, watched: int, rate: float, seconds: float
) -> ScaleOut:
    """Register, ping, post at ``rate`` and check the books."""
    people = await register(stack, watched)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=400)
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits)
    citizens = [
        httpx.AsyncClient(timeout=10.0, transport=httpx.AsyncHTTPTransport(local_address=a))
        if a
        else httpx.AsyncClient(timeout=10.0)
        for a in citizen_addresses(stack.url("intake"), CITIZEN_ADDRESSES)
    ]
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    bench = Bench(stack, client, citizens, people, desk, stack.run_dir, random.Random(7))
    counts: dict[str, int] = {}
    placed = [w.placed for w in people]
    tasks = [asyncio.create_task(listen(client, stack.url("notification"), w)) for w in people]
    tasks.append(
        asyncio.create_task(
            ping_forever(
                client,
                stack.url("volunteer-locator-2"),
                stack.token(Role.SERVICE),
                placed,
                5.0,
                counts,
            )
        )
    )
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in people)), 60)
        await asyncio.sleep(8.0)
        step = await run_step(bench, rate, seconds)
        await asyncio.sleep(3.0)
        metrics = await scrape_all(client, stack)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        for c in citizens:
            await c.aclose()
    lost, doubles = await check(database_url, bench.accepted)

    def total(service: str, name: str, **labels: str) -> float:
        series = metrics.get(service, {}).get(name, {})
        return sum(
            v for k, v in series.items() if all(dict(k).get(a) == b for a, b in labels.items())
        )

    return ScaleOut(
        step=step,
        reports=len(bench.accepted),
        lost=lost,
        double_bookings=doubles,
        handled_by={
            name: total(
                name, "dispatch_events_consumed_total", type="ReportReceived", outcome="handled"
            )
            for name in ("dispatch", "dispatch-2")
        },
        claims_by={
            name: total(name, "volunteer_locator_http_requests_total", route="/v1/claims")
            for name in ("volunteer-locator", "volunteer-locator-2")
        },
    )


def run(*, watched: int = 150, rate: float = 10.0, seconds: float = 20.0) -> str:
    """Start PostgreSQL and the stack with two dispatch and two locator instances, measure."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    postgres = start_postgres(free_port())  # its own directory, readable by postgres
    specs = services()
    stack = Stack(
        run_dir=run_dir,
        services=specs,
        database_url=postgres.url,
        broker_port=free_port(),
        redis_port=free_port(),
        extra_env={"LOG_LEVEL": "WARNING", "SERVICE_AREA_GEOJSON": BENCH_AREA_OFF},
    )
    second_locator = f"http://127.0.0.1:{specs[-1].port}"  # volunteer-locator-2
    stack.service_env = {
        "dispatch-2": {"SERVICE_NAME": "dispatch", "LOCATOR_URL": second_locator},
        "volunteer-locator-2": {"SERVICE_NAME": "volunteer-locator"},
    }
    try:
        started = time.perf_counter()
        stack.start_infrastructure()
        for spec in specs:
            stack.start_service(spec)
            if spec.name == "volunteer-locator":
                # The first instance creates the schema; the second finds it.
                stack.wait_ready(timeout=180, names=[spec.name])
        stack.wait_ready(timeout=180)
        print(f"  six services up on PostgreSQL in {time.perf_counter() - started:.0f}s")
        figures = asyncio.run(
            measure(stack, postgres.url, watched=watched, rate=rate, seconds=seconds)
        )
    finally:
        stack.stop()
        with contextlib.suppress(Exception):
            postgres.stop()
    return section(figures, rate=rate, seconds=seconds)


def section(f: ScaleOut, *, rate: float, seconds: float) -> str:
    """The ``## Scale-out correctness`` section."""
    ok = f.lost == 0 and f.double_bookings == 0
    return "\n".join(
        [
            f"{machine()}. `python -m bench --only scaleout` (bench/scaleout.py): PostgreSQL, "
            "the embedded broker and Redis; intake and notification once, dispatch and the "
            "locator twice each in their consumer groups (each dispatch instance claims "
            f"through its own locator instance); {rate:g} reports/s for {seconds:g} s at the "
            "spots of watched responders, each incident cancelled once offered.",
            "",
            "| check | result | verdict |",
            "|---|---|---|",
            f"| lost reports (accepted, never offered or flagged) | {f.lost} of {f.reports} | "
            f"{'met' if f.lost == 0 else 'missed'} |",
            "| double bookings (two offers holding one responder at once) | "
            f"{f.double_bookings} | {'met' if f.double_bookings == 0 else 'missed'} |",
            "| reports handled per dispatch instance | "
            + " / ".join(f"{v:.0f}" for v in f.handled_by.values())
            + " | |",
            "| claims answered per locator instance | "
            + " / ".join(f"{v:.0f}" for v in f.claims_by.values())
            + " | |",
            f"| 202 → offer on the stream | p50 {f.step.p(50):.1f} ms, p99 {f.step.p(99):.1f} ms,"
            f" {f.step.missed} missed | |",
            "",
            "Verdict: " + ("0 double bookings and 0 lost reports." if ok else "see above."),
        ]
    )
