"""Dispatch latency on the embedded stack (docs/contract.md): from the 202 on a report to the
first offer on the responder's stream, at a steady report rate with many on-duty
responders pinging.

The whole system runs as `make run` runs it (``Stack`` on free ports, every service a
subprocess). The responders are bulk-loaded into the locator's database before it
starts (``bench.locator.bulk_load``; it rebuilds its Redis cache from the database), so
10,000 of them are on duty in seconds; their pings go through ``POST
/v1/locations/batch`` every ``ping_interval_s``. A few hundred of them are *watched*:
their notification streams are open, and each report is posted exactly where a free
watched responder stands, as a ``fraud`` report (any one unit, no skill), so that
responder is the truly nearest eligible one (ETA 0) and the offer must reach their
stream. When it does, the dispatcher cancels the incident, which frees them again.

The baseline in the same run is the raw broker round trip on the stack's own broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.broker import round_trips
from bench.common import machine, percentile
from bench.locator import Placed, bulk_load
from services.volunteer_locator.geo import haversine_m
from shared.auth import Role
from tools.devstack import Stack
from tools.simulator import citizen_addresses, parse_time, sse_messages

CATEGORY = "fraud"  # one unit of any kind, no skill: the watched responder is eligible
SPACING_M = 400.0  # watched responders stand this far apart (duplicates merge within 150 m)


@dataclass
class Watched:
    """A responder whose stream the benchmark listens on."""

    placed: Placed
    token: str
    offers: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


@dataclass
class DispatchFigures:
    """What the run measured."""

    latencies_s: list[float]
    system_s: list[float]  # intake received_at -> offer created, from dispatch's records
    posted: int
    missed: int
    wrong: int
    broker_s: list[float]
    responders: int
    watched: int
    rate: float
    seconds: float
    ping_interval_s: float
    pings_sent: int
    ping_refusals: int
    setup_s: float


def choose_watched(placed: list[Placed], count: int) -> list[Placed]:
    """Responders at least ``SPACING_M`` apart, so no two reports merge as duplicates."""
    chosen: list[Placed] = []
    for p in placed:
        if all(haversine_m(p.at, c.at) >= SPACING_M for c in chosen):
            chosen.append(p)
            if len(chosen) == count:
                break
    return chosen


async def listen(client: httpx.AsyncClient, base: str, w: Watched) -> None:
    """Keep the watched responder's stream open; queue every offer with its arrival time."""
    url = f"{base}/v1/responders/{w.placed.responder_id}/stream"
    headers = {"authorization": f"Bearer {w.token}", "accept": "text/event-stream"}
    while True:
        with contextlib.suppress(httpx.HTTPError):
            async with client.stream("GET", url, headers=headers) as response:
                response.raise_for_status()
                w.connected.set()
                async for _event, data in sse_messages(response):
                    arrived = time.perf_counter()
                    message = json.loads(data)
                    if message.get("type") == "offer":
                        w.offers.put_nowait((arrived, message))
        await asyncio.sleep(0.2)


async def ping_forever(
    client: httpx.AsyncClient,
    base: str,
    token: str,
    placed: list[Placed],
    interval_s: float,
    counts: dict[str, int],
) -> None:
    """Every responder's position once per interval, as batches of 1,000 spread over it."""
    batches = [placed[i : i + 1000] for i in range(0, len(placed), 1000)]
    gap = interval_s / len(batches)
    headers = {"authorization": f"Bearer {token}"}
    while True:
        for batch in batches:
            started = time.perf_counter()
            now = datetime.now(UTC).isoformat()
            body = {
                "pings": [
                    {"responder_id": p.responder_id, "lat": p.at.lat, "lon": p.at.lon}
                    | {"recorded_at": now}
                    for p in batch
                ]
            }
            try:
                answer = await client.post(f"{base}/v1/locations/batch", json=body, headers=headers)
                key = "sent" if answer.status_code == 202 else "refused"
            except httpx.HTTPError:
                key = "refused"
            counts[key] = counts.get(key, 0) + len(batch)
            await asyncio.sleep(max(0.0, gap - (time.perf_counter() - started)))


async def measure(  # noqa: PLR0915 (one timed run, set up and torn down in order)
    stack: Stack,
    placed: list[Placed],
    *,
    watched_count: int,
    rate: float,
    seconds: float,
    ping_interval_s: float,
    setup_s: float,
) -> DispatchFigures:
    """Open the watched streams, start pinging, post reports at ``rate`` and time the offers."""
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=400)
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits)
    citizens = [
        httpx.AsyncClient(timeout=10.0, transport=httpx.AsyncHTTPTransport(local_address=a))
        if a
        else httpx.AsyncClient(timeout=10.0)
        for a in citizen_addresses(stack.url("intake"), 200)
    ]
    watched = [
        Watched(p, stack.token(Role.RESPONDER, p.responder_id))
        for p in choose_watched(placed, watched_count)
    ]
    counts: dict[str, int] = {}
    tasks = [asyncio.create_task(listen(client, stack.url("notification"), w)) for w in watched]
    tasks.append(
        asyncio.create_task(
            ping_forever(
                client,
                stack.url("volunteer-locator"),
                stack.token(Role.SERVICE),
                placed,
                ping_interval_s,
                counts,
            )
        )
    )
    latencies: list[float] = []
    incidents: list[str] = []
    missed = wrong = posted = 0
    retired: set[str] = set()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watched)), 60)
        # One full ping round plus the ingest lag, so everyone is fresh in the index.
        await asyncio.sleep(ping_interval_s + 3.0)
        print(f"  {len(watched)} streams open, {len(placed):,} responders pinging; load on")

        async def one(w: Watched) -> None:
            nonlocal missed, wrong, posted
            w.busy = True
            try:
                body = {
                    "category": CATEGORY,
                    "location": {"lat": w.placed.at.lat, "lon": w.placed.at.lon},
                }
                answer = await random.choice(citizens).post(
                    f"{stack.url('intake')}/v1/reports", json=body
                )
                accepted = time.perf_counter()
                if answer.status_code != 202:
                    missed += 1
                    return
                posted += 1
                try:
                    arrived, offer = await asyncio.wait_for(w.offers.get(), 10)
                except TimeoutError:
                    # Its late offer would be taken for the next report's: retire them.
                    missed += 1
                    retired.add(w.placed.responder_id)
                    return
                latencies.append(max(0.0, arrived - accepted))
                if float(offer["distance_m"]) > 5:
                    wrong += 1
                incidents.append(offer["incident_id"])
                await client.post(
                    f"{stack.url('dispatch')}/v1/incidents/{offer['incident_id']}/cancel",
                    headers=desk,
                )
                # Until the locator has applied the release, they are not free.
                await asyncio.sleep(1.0)
            finally:
                w.busy = w.placed.responder_id in retired

        jobs = []
        started = time.perf_counter()
        for i in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            free = [w for w in watched if not w.busy]
            if not free:
                missed += 1
                continue
            jobs.append(asyncio.create_task(one(random.choice(free))))
        await asyncio.gather(*jobs)
        system = await offer_delays(client, stack.url("dispatch"), desk, incidents)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        for c in citizens:
            await c.aclose()
    broker = await round_trips(stack.kafka_bootstrap_servers or "", count=300)
    return DispatchFigures(
        latencies_s=latencies,
        system_s=system,
        posted=posted,
        missed=missed,
        wrong=wrong,
        broker_s=broker,
        responders=len(placed),
        watched=len(watched),
        rate=rate,
        seconds=seconds,
        ping_interval_s=ping_interval_s,
        pings_sent=counts.get("sent", 0),
        ping_refusals=counts.get("refused", 0),
        setup_s=setup_s,
    )


async def offer_delays(
    client: httpx.AsyncClient, base: str, desk: dict[str, str], incidents: list[str]
) -> list[float]:
    """Report received (intake's clock) to first offer created, from dispatch's records."""
    delays = []
    for incident_id in incidents:
        answer = await client.get(f"{base}/v1/incidents/{incident_id}", headers=desk)
        if answer.status_code != 200:
            continue
        body = answer.json()
        if body["offers"]:
            first = min(parse_time(o["offered_at"]) for o in body["offers"])
            delays.append(first - parse_time(body["received_at"]))
    return delays


def run(*, responders: int, watched: int, rate: float, seconds: float, seed: int) -> str:
    """Start the stack with ``responders`` bulk-loaded, measure, stop; the markdown section."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    stack = Stack.on_free_ports(run_dir, extra_env={"LOG_LEVEL": "WARNING"})
    ping_interval_s = 5.0
    try:
        started = time.perf_counter()
        stack.start_infrastructure()
        database_url = f"sqlite+aiosqlite:///{run_dir / 'volunteer-locator.db'}"
        placed = asyncio.run(bulk_load(database_url, responders, random.Random(seed)))
        for spec in stack.services:
            stack.start_service(spec)
        stack.wait_ready(timeout=180)
        setup_s = time.perf_counter() - started
        print(f"  stack up with {responders:,} responders in {setup_s:.1f}s (logs in {run_dir})")
        figures = asyncio.run(
            measure(
                stack,
                placed,
                watched_count=watched,
                rate=rate,
                seconds=seconds,
                ping_interval_s=ping_interval_s,
                setup_s=setup_s,
            )
        )
    finally:
        stack.stop()
    return section(figures)


def ms(values_s: list[float], q: float) -> str:
    """A percentile of seconds, in milliseconds, for the table."""
    if not values_s:
        return "n/a"
    value = statistics.median(values_s) if q == 50 else percentile(values_s, q)
    return f"{value * 1000:.1f}"


def section(f: DispatchFigures) -> str:
    """The ``## Dispatch latency`` section."""
    p50 = statistics.median(f.latencies_s) * 1000 if f.latencies_s else float("inf")
    p99 = percentile(f.latencies_s, 99) * 1000 if f.latencies_s else float("inf")
    verdict = "met" if p50 <= 25 and p99 <= 100 else "missed"
    return "\n".join(
        [
            f"{machine()}. `python -m bench` (bench/dispatch.py): the four services as "
            "subprocesses on the embedded stack (Tansu broker, redis-server, SQLite), "
            f"{f.responders:,} on-duty responders bulk-loaded into the locator and pinging "
            f"every {f.ping_interval_s:g} s through `POST /v1/locations/batch` "
            f"({f.pings_sent:,} pings sent, {f.ping_refusals:,} refused), reports posted at "
            f"{f.rate:g}/s for {f.seconds:g} s, each where one of {f.watched} watched "
            f"responders stands (category `{CATEGORY}`); setup {f.setup_s:.0f} s.",
            "",
            "| measure | p50 (ms) | p99 (ms) | target (docs/contract.md) | verdict |",
            "|---|---|---|---|---|",
            f"| dispatch latency: 202 on the report → offer on the responder's stream "
            f"(n={len(f.latencies_s)}) | {ms(f.latencies_s, 50)} | {ms(f.latencies_s, 99)} | "
            f"p50 ≤ 25, p99 ≤ 100 | {verdict} |",
            f"| of which in the system: intake received → offer created (dispatch's "
            f"records, n={len(f.system_s)}) | {ms(f.system_s, 50)} | {ms(f.system_s, 99)} | | |",
            f"| baseline: broker round trip, produce → consume (n={len(f.broker_s)}) | "
            f"{ms(f.broker_s, 50)} | {ms(f.broker_s, 99)} | | |",
            "",
            f"- Correctness under load: {f.posted} reports accepted; {len(f.latencies_s)} "
            f"offers reached the watched responder standing at the spot (the truly nearest, "
            f"ETA 0); {f.wrong} went to anyone farther than 5 m; {f.missed} reports missed "
            "(no offer on that stream within 10 s, refused posts, or no watched responder "
            "free at that moment; a responder whose offer was late is retired). The harness "
            "also cancels each incident once offered, so dispatch handles 20 cancels/s too.",
            "- Path of one report: intake commits it with its outbox row and answers 202; its "
            "relay publishes `ReportReceived`; dispatch consumes it, claims in the locator "
            "(HTTP + Redis Lua), commits the offer with its outbox row; its relay publishes "
            "`ResponderOffered`; notification consumes it, XADDs to the responder's Redis "
            "stream and wakes the SSE client. That is two broker hops, each about the "
            "baseline round trip, plus three SQLite commits and the claim.",
            "- What limits it (profiled 2026-11-23 with per-hop timers and cProfile): "
            "dispatch, which handles each report in about 40-55 ms of wall time: three "
            "SQLite transactions and about eight reads through aiosqlite (a thread hop "
            "each), the claim (an HTTP round trip of about 8-20 ms, since the locator's one "
            "event loop is also parsing 2,000 pings/s), and the harness's 20 cancels/s taking "
            "the same write lock. It used to take reports strictly one at a time and retry "
            "every open incident whenever a responder came free (20 times a second here), "
            "so at 20/s it fell behind and queued for seconds. Now the partitions of a fetch "
            "are handled side by side, a freed responder retries only incidents flagged as "
            "having nobody, the timer loop is woken only for an earlier deadline, and "
            "SQLite skips the pool pre-ping; it keeps up, but with little headroom on the 2 "
            "shared cores, so queueing still sets the p99. Past dispatch: "
            "two broker hops (about twice the baseline) and two outbox relays, then "
            "notification's delivery row and XADD. Next steps: fewer dispatch round trips "
            "per report (one transaction for open + offer), the claim off the ping loop "
            "(a second locator process), then the relays' poll and fetch waits.",
        ]
    )
