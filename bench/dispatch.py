"""Dispatch latency on the embedded stack (docs/contract.md): from the 202 on a report to the
first offer on the responder's stream, as a load curve over report rates, a surge, and a
per-hop breakdown at the knee.

The whole system runs as `make run` runs it (``Stack`` on free ports, every service a
subprocess). The responders are bulk-loaded into the locator's database before it
starts (``bench.locator.bulk_load``; it rebuilds its Redis cache from the database), so
10,000 of them are on duty in seconds; their pings go through ``POST
/v1/locations/batch`` every ``ping_interval_s``. A few hundred of them are *watched*:
their notification streams are open, and each report is posted exactly where a free
watched responder stands, as a ``fraud`` report (any one unit, no skill), so that
responder is the truly nearest eligible one (ETA 0) and the offer must reach their
stream. When it does, the dispatcher cancels the incident, which frees them again.

The curve runs each rate in turn on one stack. The surge then posts 100 reports a
second for 20 s at spots of their own (read back from dispatch's database: every report
must end offered or flagged), then 5 a second at watched spots, to time the recovery.

Each run sits beside the raw broker round trip on the stack's own broker and a
brute-force nearest scan (the machine's speed), both measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench.broker import round_trips
from bench.common import ROOT, machine, percentile
from bench.locator import CENTRE, Placed, brute_force_nearest, bulk_load
from services.volunteer_locator.geo import Point, haversine_m, offset
from shared.auth import Role
from tools.devstack import Stack
from tools.simulator import citizen_addresses, sse_messages

# The bench town is not the demo district: intake's service-area check is off (intake
# still refuses coordinates the index cannot hold).
BENCH_AREA_OFF = ""

CATEGORY = "fraud"  # one unit of any kind, no skill: the watched responder is eligible
SPACING_M = 400.0  # watched responders stand this far apart (duplicates merge within 150 m)
OFFER_WAIT_S = 10.0  # a report with no offer on the stream by then is missed
CURVE_RATES = (5.0, 10.0, 20.0, 40.0, 60.0, 80.0)
PLOT = ROOT / "docs" / "dispatch-curve.png"
KNEE_P99_MS = 1000.0
IDLE_SAMPLE_S = 3.0
SATURATED_SHARE = 0.5  # a step missing more than this share ends the curve
DRAIN_TIMEOUT_S = 90.0
SURGE_STALL_S = 30.0  # the surge wait gives up after this long with no report settling
SURGE_WAIT_LIMIT_S = 360.0
CITIZEN_ADDRESSES = 300  # the per-address rate limit (30 a minute) sees many phones

Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass
class Watched:
    """A responder whose stream the benchmark listens on."""

    placed: Placed
    token: str
    offers: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


@dataclass
class Step:
    """One rate of the curve."""

    rate: float
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    posted: int = 0
    missed: int = 0
    wrong: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    hops_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_report: dict[str, float] = field(default_factory=dict)  # above idle
    idle_cpu_share: dict[str, float] = field(default_factory=dict)  # cores, no reports

    def p(self, q: float) -> float:
        """A latency percentile in ms (inf with no samples)."""
        if not self.latencies_s:
            return math.inf
        value = statistics.median(self.latencies_s) if q == 50 else percentile(self.latencies_s, q)
        return value * 1000

    @property
    def within_knee(self) -> bool:
        """p99 ≤ 1 s and nothing missed."""
        return self.p(99) <= KNEE_P99_MS and self.missed == 0 and not self.refused


@dataclass
class Surge:
    """The surge and the recovery after it."""

    rate: float
    seconds: float
    tail_rate: float
    tail_seconds: float
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    offered: int = 0
    flagged: int = 0
    lost: int = 0
    system_s: list[float] = field(default_factory=list)  # received -> first offer
    # (seconds after the surge's end the report was posted, 202 -> offer on the stream)
    tail: list[tuple[float, float]] = field(default_factory=list)
    tail_missed: int = 0
    ended_at: float = 0.0  # wall clock (epoch s) at the surge's end
    settled_after_s: float | None = None  # surge's end -> its last report offered or flagged

    def recovered_after_s(self, *, window_s: float = 5.0, p99_ms: float = 100.0) -> float | None:
        """Seconds after the surge's end from which every 5 s window of the tail has its
        p99 under 100 ms (None if it never settles)."""
        if not self.tail:
            return None
        windows: dict[int, list[float]] = {}
        for at_s, latency_s in self.tail:
            windows.setdefault(int(at_s // window_s), []).append(latency_s)
        settled: float | None = None
        for index in sorted(windows):
            if percentile(windows[index], 99) * 1000 <= p99_ms:
                settled = index * window_s if settled is None else settled
            else:
                settled = None
        return settled


@dataclass
class Figures:
    """Everything the run measured."""

    steps: list[Step]
    skipped: list[float]
    surge: Surge | None
    broker_s: list[float]
    brute_force_s: list[float]
    rss_mb: dict[str, float]
    redis_keys: int
    redis_mb: float
    responders: int
    watched: int
    pings_sent: int
    ping_refusals: int
    setup_s: float
    ping_interval_s: float


def choose_watched(placed: list[Placed], count: int) -> list[Placed]:
    """Responders at least ``SPACING_M`` apart, so no two reports merge as duplicates."""
    chosen: list[Placed] = []
    cells: dict[tuple[int, int], list[Placed]] = {}
    for p in placed:
        cell = (round(p.at.lat / 0.004), round(p.at.lon / 0.004))  # about 400 m
        near = [
            c
            for dx, dy in itertools.product((-1, 0, 1), repeat=2)
            for c in cells.get((cell[0] + dx, cell[1] + dy), [])
        ]
        if all(haversine_m(p.at, c.at) >= SPACING_M for c in near):
            chosen.append(p)
            cells.setdefault(cell, []).append(p)
            if len(chosen) == count:
                break
    return chosen


def spare_spots(watched: Sequence[Placed], count: int) -> list[Point]:
    """Spots on a 400 m grid, at least ``SPACING_M`` from each other and from every
    watched responder (so a surge report never merges with a curve or tail report)."""
    spots: list[Point] = []
    side = math.ceil(math.sqrt(count * 2))
    for i, j in itertools.product(range(side), repeat=2):
        at = offset(
            CENTRE,
            north_m=(i - side / 2) * SPACING_M * 1.25,
            east_m=(j - side / 2) * SPACING_M * 1.25,
        )
        if all(
            haversine_m(at, w.at) >= SPACING_M for w in watched if abs(w.at.lat - at.lat) < 0.01
        ):
            spots.append(at)
            if len(spots) == count:
                break
    return spots


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
    # Built once: only the time changes from one round to the next.
    batches = [
        [
            {"responder_id": p.responder_id, "lat": p.at.lat, "lon": p.at.lon, "recorded_at": ""}
            for p in placed[i : i + 1000]
        ]
        for i in range(0, len(placed), 1000)
    ]
    gap = interval_s / len(batches)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    while True:
        for batch in batches:
            started = time.perf_counter()
            now = datetime.now(UTC).isoformat()
            for ping in batch:
                ping["recorded_at"] = now
            body = orjson.dumps({"pings": batch})
            try:
                answer = await client.post(
                    f"{base}/v1/locations/batch", content=body, headers=headers
                )
                key = "sent" if answer.status_code == 202 else "refused"
            except httpx.HTTPError:
                key = "refused"
            counts[key] = counts.get(key, 0) + len(batch)
            await asyncio.sleep(max(0.0, gap - (time.perf_counter() - started)))


# --- the services' own numbers -----------------------------------------------------


async def scrape_all(client: httpx.AsyncClient, stack: Stack) -> dict[str, Scrape]:
    """Every service's ``/metrics``, by service, name and labels."""
    out: dict[str, Scrape] = {}
    for spec in stack.services:
        try:
            text = (await client.get(f"{stack.url(spec.name)}/metrics")).text
        except httpx.HTTPError:
            continue
        scrape: Scrape = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scrape.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                    sample.value
                )
        out[spec.name] = scrape
    return out


def hist_mean_ms(
    before: dict[str, Scrape], after: dict[str, Scrape], service: str, name: str, **labels: str
) -> float:
    """The mean of a histogram's observations between two scrapes, in ms (summed over
    label sets that match ``labels``)."""

    def total(scrape: dict[str, Scrape], suffix: str) -> float:
        series = scrape.get(service, {}).get(name + suffix, {})
        return sum(
            v for key, v in series.items() if all(dict(key).get(k) == w for k, w in labels.items())
        )

    count = total(after, "_count") - total(before, "_count")
    if count <= 0:
        return math.nan
    return (total(after, "_sum") - total(before, "_sum")) / count * 1000


def hops(
    before: dict[str, Scrape], after: dict[str, Scrape], end_to_end_ms: float
) -> dict[str, float]:
    """Mean time per hop of one report (ms), from the services' histograms."""
    post = hist_mean_ms(
        before, after, "intake", "intake_http_request_duration_seconds", route="/v1/reports"
    )
    intake_relay = hist_mean_ms(before, after, "intake", "intake_outbox_relay_seconds")
    to_dispatch = hist_mean_ms(
        before, after, "dispatch", "dispatch_event_delivery_seconds", topic="reports"
    )
    received_to_offer = hist_mean_ms(before, after, "dispatch", "dispatch_latency_seconds")
    claim = hist_mean_ms(before, after, "dispatch", "dispatch_claim_seconds", outcome="claimed")
    dispatch_relay = hist_mean_ms(before, after, "dispatch", "dispatch_outbox_relay_seconds")
    to_notification = hist_mean_ms(
        before, after, "notification", "notification_event_delivery_seconds", topic="incidents"
    )
    to_stream = hist_mean_ms(
        before, after, "notification", "notification_delivery_latency_seconds", channel="stream"
    )
    out = {
        "intake: POST handled, report and outbox row committed": post,
        "intake relay: committed → broker acknowledged": intake_relay,
        "broker hop `reports` and the wait in dispatch's consume loop": to_dispatch - intake_relay,
        "dispatch: consumed → offer transaction begins (reads, claim)": received_to_offer
        - to_dispatch,
        "  of which the claim (HTTP + Redis Lua)": claim,
        "dispatch commit + relay: offer transaction → broker acknowledged": dispatch_relay,
        "broker hop `incidents` and the wait in notification's consume loop": to_notification
        - dispatch_relay,
        "notification: consumed → XADD to the responder's stream": to_stream - to_notification,
    }
    known = sum(v for k, v in out.items() if not k.startswith(" ") and not math.isnan(v))
    out["SSE wake-up → client, and what the means miss"] = end_to_end_ms - known
    return out


# --- the run -----------------------------------------------------------------------


@dataclass
class Bench:
    """What every phase of the run shares."""

    stack: Stack
    client: httpx.AsyncClient
    citizens: list[httpx.AsyncClient]
    watched: list[Watched]
    desk: dict[str, str]
    run_dir: Path
    rng: random.Random
    retired: set[str] = field(default_factory=set)
    accepted: list[str] = field(default_factory=list)  # report ids answered 202
    _next_citizen: itertools.count[int] = field(default_factory=itertools.count)

    async def post_report(self, at: Point) -> tuple[httpx.Response | None, float]:
        """Post a report at ``at`` from the next citizen (own address and device)."""
        citizen = self.citizens[next(self._next_citizen) % len(self.citizens)]
        body = {
            "category": CATEGORY,
            "location": {"lat": at.lat, "lon": at.lon},
            "reporter": {"device_id": f"bench-{uuid.uuid4()}"},
        }
        try:
            answer = await citizen.post(f"{self.stack.url('intake')}/v1/reports", json=body)
        except httpx.HTTPError:
            return None, time.perf_counter()
        answered = time.perf_counter()
        if answer.status_code == 202:
            self.accepted.append(str(answer.json()["report_id"]))
        return answer, answered

    async def cancel(self, incident_id: str) -> None:
        """The dispatcher cancels an incident (which frees its responder)."""
        with contextlib.suppress(httpx.HTTPError):
            await self.client.post(
                f"{self.stack.url('dispatch')}/v1/incidents/{incident_id}/cancel",
                headers=self.desk,
            )

    async def watched_report(self, w: Watched, step: Step | None) -> tuple[float, float] | None:
        """Post at a watched responder's spot and wait for the offer on their stream;
        (posted at, latency) or None if refused or missed."""
        w.busy = True
        try:
            answer, accepted = await self.post_report(w.placed.at)
            if answer is None or answer.status_code != 202:
                if step is not None:
                    code = 0 if answer is None else answer.status_code
                    step.refused[code] = step.refused.get(code, 0) + 1
                return None
            if step is not None:
                step.posted += 1
            try:
                arrived, offer = await asyncio.wait_for(w.offers.get(), OFFER_WAIT_S)
            except TimeoutError:
                # Its late offer would be taken for the next report's: retire them.
                self.retired.add(w.placed.responder_id)
                return None
            if step is not None and float(offer["distance_m"]) > 5:
                step.wrong += 1
            await self.cancel(str(offer["incident_id"]))
            return accepted, max(0.0, arrived - accepted)
        finally:
            # Until the locator has applied the release, they are not free.
            await asyncio.sleep(1.0)
            w.busy = w.placed.responder_id in self.retired

    def free_watched(self) -> Watched | None:
        """A watched responder not waiting on a report, at random."""
        free = [w for w in self.watched if not w.busy]
        return self.rng.choice(free) if free else None


async def run_step(bench: Bench, rate: float, seconds: float) -> Step:
    """Post at ``rate`` for ``seconds`` at watched spots; time each offer."""
    step = Step(rate=rate, seconds=seconds)

    async def one(w: Watched) -> None:
        result = await bench.watched_report(w, step)
        if result is None:
            step.missed += 1
        else:
            step.latencies_s.append(result[1])

    # What the services burn with no reports (pings, polling consumers, timers), to
    # subtract: the CPU a report adds is what the figures are about.
    idle_before, idle_started = cpu_seconds(bench.stack), time.perf_counter()
    await asyncio.sleep(IDLE_SAMPLE_S)
    idle_after, idle_s = cpu_seconds(bench.stack), time.perf_counter() - idle_started
    before = await scrape_all(bench.client, bench.stack)
    cpu_before = cpu_seconds(bench.stack)
    jobs = []
    started = time.perf_counter()
    for i in range(round(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        w = bench.free_watched()
        if w is None:
            step.missed += 1
            continue
        jobs.append(asyncio.create_task(one(w)))
    await asyncio.gather(*jobs)
    cpu_after = cpu_seconds(bench.stack)
    step_s = time.perf_counter() - started
    after = await scrape_all(bench.client, bench.stack)
    reports = max(1, round(rate * seconds))
    step.cpu_ms_per_report = {
        name: (cpu_after[name] - used - (idle_after[name] - idle_before[name]) / idle_s * step_s)
        / reports
        * 1000
        for name, used in cpu_before.items()
        if name in cpu_after and name in idle_after and name in idle_before
    }
    step.idle_cpu_share = {
        name: (idle_after[name] - idle_before[name]) / idle_s
        for name in idle_after
        if name in idle_before
    }
    mean_ms = statistics.fmean(step.latencies_s) * 1000 if step.latencies_s else math.nan
    step.hops_ms = hops(before, after, mean_ms)
    return step


async def drain(bench: Bench) -> None:
    """Wait (up to ``DRAIN_TIMEOUT_S``) until no report or incident event is waiting in a
    consumer or an outbox, so one step's backlog does not spill into the next."""
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    quiet = 0
    while time.perf_counter() < deadline and quiet < 2:
        await asyncio.sleep(1.0)
        scrape = await scrape_all(bench.client, bench.stack)
        waiting = sum(
            value
            for service, name in (
                ("dispatch", "dispatch_consumer_lag_messages"),
                ("notification", "notification_consumer_lag_messages"),
                ("intake", "intake_outbox_pending_events"),
                ("dispatch", "dispatch_outbox_pending_events"),
            )
            for value in scrape.get(service, {}).get(name, {}).values()
        )
        quiet = quiet + 1 if waiting == 0 else 0


def read_outcomes(database: Path, report_ids: Sequence[str]) -> dict[str, tuple[str, Any, Any]]:
    """Report id → (incident id, received_at, first offered_at or None), plus whether it
    was flagged, read from dispatch's database (its tables, read-only)."""
    wanted = {uuid.UUID(r).hex: r for r in report_ids}
    out: dict[str, tuple[str, Any, Any]] = {}
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout=5000")
        rows = db.execute(
            "SELECT ir.report_id, i.id, i.received_at, i.no_responder_since,"
            " (SELECT MIN(o.offered_at) FROM offers o WHERE o.incident_id = i.id)"
            " FROM incident_reports ir JOIN incidents i ON i.id = ir.incident_id"
        ).fetchall()
    for report_id, incident_id, received_at, flagged_at, offered_at in rows:
        key = str(report_id).replace("-", "")
        if key in wanted:
            out[wanted[key]] = (str(incident_id), received_at, offered_at or flagged_at)
    return out


def _when(value: Any) -> float:
    text = str(value).replace(" ", "T")
    at = datetime.fromisoformat(text)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


async def run_surge(
    bench: Bench, *, rate: float, seconds: float, tail_rate: float, tail_seconds: float
) -> Surge:
    """``rate`` reports/s for ``seconds`` at spots of their own, then ``tail_rate`` at
    watched spots; every surge report must end offered or flagged."""
    surge = Surge(rate=rate, seconds=seconds, tail_rate=tail_rate, tail_seconds=tail_seconds)
    spots = spare_spots([w.placed for w in bench.watched], round(rate * seconds))
    database = bench.run_dir / "dispatch.db"
    report_ids: list[str] = []
    cancelled: set[str] = set()
    done = asyncio.Event()

    async def post(at: Point) -> None:
        answer, _ = await bench.post_report(at)
        if answer is None or answer.status_code != 202:
            code = 0 if answer is None else answer.status_code
            surge.refused[code] = surge.refused.get(code, 0) + 1
            return
        surge.accepted += 1
        report_ids.append(str(answer.json()["report_id"]))

    async def cancel_offered() -> None:
        # As in the curve, the dispatcher cancels each incident once offered.
        while not done.is_set():
            outcomes = await asyncio.to_thread(read_outcomes, database, list(report_ids))
            fresh = {i for i, _, offered in outcomes.values() if offered} - cancelled
            cancelled.update(fresh)
            await asyncio.gather(*(bench.cancel(i) for i in fresh))
            await asyncio.sleep(0.5)

    canceller = asyncio.create_task(cancel_offered())
    jobs = []
    started = time.perf_counter()
    for i, at in enumerate(spots):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        jobs.append(asyncio.create_task(post(at)))
    surge_end = time.perf_counter()
    surge.ended_at = time.time()

    async def tail_one(w: Watched) -> None:
        result = await bench.watched_report(w, None)
        if result is None:
            surge.tail_missed += 1
        else:
            surge.tail.append((result[0] - surge_end, result[1]))

    tail_jobs = []
    for i in range(round(tail_rate * tail_seconds)):
        await asyncio.sleep(max(0.0, surge_end + i / tail_rate - time.perf_counter()))
        w = bench.free_watched()
        if w is None:
            surge.tail_missed += 1
            continue
        tail_jobs.append(asyncio.create_task(tail_one(w)))
    await asyncio.gather(*jobs, *tail_jobs)
    outcomes = await settled_outcomes(database, report_ids)
    done.set()
    await canceller
    tally_surge(surge, database, report_ids, outcomes)
    return surge


async def settled_outcomes(
    database: Path, report_ids: Sequence[str]
) -> dict[str, tuple[str, Any, Any]]:
    """The reports' outcomes once every one is offered or flagged: waits while dispatch
    works through its backlog, and gives up after ``SURGE_STALL_S`` with no report
    settling (or ``SURGE_WAIT_LIMIT_S`` in all)."""
    deadline = time.perf_counter() + SURGE_WAIT_LIMIT_S
    settled = -1
    moved_at = time.perf_counter()
    while True:
        outcomes = await asyncio.to_thread(read_outcomes, database, report_ids)
        now_settled = sum(1 for o in outcomes.values() if o[2])
        if now_settled == len(report_ids):
            return outcomes
        if now_settled > settled:
            settled, moved_at = now_settled, time.perf_counter()
        if time.perf_counter() - moved_at > SURGE_STALL_S or time.perf_counter() > deadline:
            return outcomes
        await asyncio.sleep(1)


def tally_surge(
    surge: Surge,
    database: Path,
    report_ids: Sequence[str],
    outcomes: dict[str, tuple[str, Any, Any]],
) -> None:
    """Count the surge's reports offered (with their time in the system) or lost, and the
    incidents flagged."""
    last_at: float | None = None
    for report_id in report_ids:
        outcome = outcomes.get(report_id)
        if outcome is None or not outcome[2]:
            surge.lost += 1
            continue
        surge.offered += 1
        surge.system_s.append(max(0.0, _when(outcome[2]) - _when(outcome[1])))
        last_at = max(last_at or 0.0, _when(outcome[2]))
    if last_at is not None and not surge.lost:
        surge.settled_after_s = max(0.0, last_at - surge.ended_at)
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        flagged = db.execute(
            "SELECT COUNT(*) FROM incidents WHERE no_responder_since IS NOT NULL"
        ).fetchone()[0]
    surge.flagged = int(flagged)


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) each service process has used so far."""
    out = {}
    for name, process in stack.processes.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(process.pid).cpu_times()
            out[name] = times.user + times.system
    return out


def memory(stack: Stack) -> tuple[dict[str, float], int, float]:
    """Each service's RSS (MB), and Redis's key count and memory (MB)."""
    rss = {}
    for name, process in stack.processes.items():
        with contextlib.suppress(psutil.Error):
            rss[name] = psutil.Process(process.pid).memory_info().rss / 1e6
    redis = Redis.from_url(stack.redis_url or "")
    try:
        keys = int(redis.dbsize())
        used = float(redis.info("memory")["used_memory"]) / 1e6
    finally:
        redis.close()
    return rss, keys, used


async def measure(
    stack: Stack,
    placed: list[Placed],
    run_dir: Path,
    *,
    watched_count: int,
    rates: Sequence[float],
    seconds: float,
    surge: bool,
    ping_interval_s: float,
    setup_s: float,
    seed: int,
) -> Figures:
    """Open the watched streams, start pinging, run the curve (and the surge)."""
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    # The 500 open streams get a client of their own: httpx looks through every connection
    # of a pool for each request, and the desk's cancels and the pings would pay for them.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=800)
    streams = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits)
    client = httpx.AsyncClient(
        timeout=10.0, limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
    )
    citizens = [
        httpx.AsyncClient(timeout=10.0, transport=httpx.AsyncHTTPTransport(local_address=a))
        if a
        else httpx.AsyncClient(timeout=10.0)
        for a in citizen_addresses(stack.url("intake"), CITIZEN_ADDRESSES)
    ]
    watched = [
        Watched(p, stack.token(Role.RESPONDER, p.responder_id))
        for p in choose_watched(placed, watched_count)
    ]
    bench = Bench(stack, client, citizens, watched, desk, run_dir, random.Random(seed))
    counts: dict[str, int] = {}
    tasks = [asyncio.create_task(listen(streams, stack.url("notification"), w)) for w in watched]
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
    steps: list[Step] = []
    skipped: list[float] = []
    surge_figures: Surge | None = None
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watched)), 240)
        # One full ping round plus the ingest lag, so everyone is fresh in the index.
        await asyncio.sleep(ping_interval_s + 3.0)
        print(f"  {len(watched)} streams open, {len(placed):,} responders pinging; load on")
        for rate in rates:
            if steps and steps[-1].missed > SATURATED_SHARE * round(steps[-1].rate * seconds):
                print(f"  {rate:g}/s: not run, the previous rate already saturated")
                skipped.append(rate)
                continue
            step = await run_step(bench, rate, seconds)
            steps.append(step)
            print(
                f"  {rate:g}/s: p50 {step.p(50):.1f} ms, p99 {step.p(99):.1f} ms, "
                f"{step.missed} missed of {round(rate * seconds)}",
                flush=True,
            )
            await drain(bench)
        if surge:
            await drain(bench)
            surge_figures = await run_surge(
                bench, rate=100.0, seconds=20.0, tail_rate=5.0, tail_seconds=40.0
            )
            print(
                f"  surge: {surge_figures.accepted} accepted, {surge_figures.lost} never "
                f"offered or flagged, the last settled {surge_figures.settled_after_s} s "
                f"after its end; p99 recovered after {surge_figures.recovered_after_s()} s",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await streams.aclose()
        await client.aclose()
        for c in citizens:
            await c.aclose()
    broker = await round_trips(stack.kafka_bootstrap_servers or "", count=300)
    rss, keys, redis_mb = memory(stack)
    return Figures(
        steps=steps,
        skipped=skipped,
        surge=surge_figures,
        broker_s=broker,
        brute_force_s=brute_force_baseline(placed),
        rss_mb=rss,
        redis_keys=keys,
        redis_mb=redis_mb,
        responders=len(placed),
        watched=len(watched),
        pings_sent=counts.get("sent", 0),
        ping_refusals=counts.get("refused", 0),
        setup_s=setup_s,
        ping_interval_s=ping_interval_s,
    )


def brute_force_baseline(placed: list[Placed], repeats: int = 5) -> list[float]:
    """The machine's speed: a brute-force nearest scan in Python over every responder."""
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        brute_force_nearest(placed, placed[i].at, 5)
        samples.append(time.perf_counter() - started)
    return samples


def run(
    *,
    responders: int,
    watched: int,
    rates: Sequence[float],
    seconds: float,
    surge: bool,
    seed: int,
    plot: Path | None = None,
) -> str:
    """Start the stack with ``responders`` bulk-loaded, measure, stop; the markdown section."""
    run_dir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    stack = Stack.on_free_ports(
        run_dir, extra_env={"LOG_LEVEL": "WARNING", "SERVICE_AREA_GEOJSON": BENCH_AREA_OFF}
    )
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
                run_dir,
                watched_count=watched,
                rates=rates,
                seconds=seconds,
                surge=surge,
                ping_interval_s=ping_interval_s,
                setup_s=setup_s,
                seed=seed,
            )
        )
    finally:
        stack.stop()
    if plot is not None and len(figures.steps) > 1:
        draw(figures, plot)
    return section(figures, plot if len(figures.steps) > 1 else None)


def draw(f: Figures, path: Path) -> None:
    """The curve as a PNG: p50 and p99 against the offered rate, misses marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s.rate for s in f.steps]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(rates, [min(s.p(50), 1e5) for s in f.steps], "o-", label="p50")
    ax.plot(rates, [min(s.p(99), 1e5) for s in f.steps], "s-", label="p99")
    for s in f.steps:
        if s.missed:
            ax.annotate(f"{s.missed} missed", (s.rate, min(s.p(99), 1e5)), fontsize=8)
    ax.axhline(100, color="grey", ls=":", lw=1, label="p99 target at 20/s (100 ms)")
    ax.axhline(KNEE_P99_MS, color="red", ls="--", lw=1, label="knee: p99 1 s")
    broker = statistics.median(f.broker_s) * 1000
    ax.axhline(broker, color="green", ls="-.", lw=1, label=f"broker round trip ({broker:.1f} ms)")
    ax.set_yscale("log")
    ax.set_xlabel("reports per second")
    ax.set_ylabel("202 → offer on the stream (ms)")
    ax.set_title(f"Dispatch load curve, {f.responders:,} responders pinging")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def ms(value: float) -> str:
    """Milliseconds for a table."""
    return "n/a" if math.isnan(value) or math.isinf(value) else f"{value:.1f}"


def knee(steps: Sequence[Step]) -> float | None:
    """The highest rate at which p99 ≤ 1 s with 0 missed (every lower rate too)."""
    best: float | None = None
    for step in sorted(steps, key=lambda s: s.rate):
        if not step.within_knee:
            break
        best = step.rate
    return best


def section(f: Figures, plot: Path | None) -> str:
    """The ``## Dispatch latency`` section."""
    broker_p50 = statistics.median(f.broker_s) * 1000
    broker_p99 = percentile(f.broker_s, 99) * 1000
    brute = statistics.median(f.brute_force_s) * 1000
    found = knee(f.steps)
    lines = [
        f"{machine()}. `python -m bench` (bench/dispatch.py): the four services as "
        "subprocesses on the embedded stack (Tansu broker, redis-server, SQLite), "
        f"{f.responders:,} on-duty responders bulk-loaded into the locator and pinging "
        f"every {f.ping_interval_s:g} s through `POST /v1/locations/batch` "
        f"({f.pings_sent:,} pings sent, {f.ping_refusals:,} refused); each report posted "
        f"where one of {f.watched} watched responders stands (category `{CATEGORY}`), "
        f"from its own device and one of {CITIZEN_ADDRESSES} source addresses; setup "
        f"{f.setup_s:.0f} s.",
        "",
        f"Same-run baselines: broker round trip, produce → consume, p50 {broker_p50:.1f} ms / "
        f"p99 {broker_p99:.1f} ms (n={len(f.broker_s)}); machine speed, a brute-force "
        f"nearest scan in Python over {f.responders:,} responders, {brute:.1f} ms "
        "(compare with other runs: a machine twice as slow doubles this).",
        "",
        "| offered rate (reports/s) | reports | p50 (ms) | p99 (ms) | missed | refused | "
        "CPU per report above idle (ms): intake / dispatch / locator / notification | "
        "idle CPU (% of a core), same order |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in f.steps:
        refused = ", ".join(f"{n} x {code or 'error'}" for code, n in s.refused.items()) or "0"
        lines.append(
            f"| {s.rate:g} | {round(s.rate * s.seconds)} | {ms(s.p(50))} | {ms(s.p(99))} | "
            f"{s.missed} | {refused} | {cpu_cells(s)} | {idle_cells(s)} |"
        )
    if f.skipped:
        lines.append(
            "| " + ", ".join(f"{r:g}" for r in f.skipped) + " | not run: the rate before "
            "missed more than half | | | | | | |"
        )
    lines.append("")
    at_20 = next((s for s in f.steps if s.rate == 20), None)
    if at_20 is not None:
        verdict = (
            "met" if at_20.p(50) <= 25 and at_20.p(99) <= 100 and not at_20.missed else "missed"
        )
        lines.append(
            f"- **At 20 reports/s** (target p50 ≤ 25 ms, p99 ≤ 100 ms, 0 missed): "
            f"{ms(at_20.p(50))} / {ms(at_20.p(99))} ms, {at_20.missed} missed: {verdict}."
        )
    lines.append(
        "- **Knee** (highest rate with p99 ≤ 1 s and 0 missed; target ≥ 60/s): "
        + (f"{found:g} reports/s" if found is not None else "below the lowest rate")
        + (": met." if found is not None and found >= 60 else ": missed.")
    )
    lines.append(
        "- Missed: no offer on the watched responder's stream within 10 s, a refused post, "
        "or no watched responder free at that moment (a responder whose offer was late is "
        "retired). Every offer went to the watched responder at the spot (the truly "
        f"nearest, ETA 0): {sum(s.wrong for s in f.steps)} went to anyone farther than 5 m. "
        "The harness cancels each incident once offered, so dispatch handles as many "
        "cancels as reports."
    )
    if plot is not None:
        lines += ["", f"![load curve]({plot.name})", ""]
    if f.surge is not None:
        lines += surge_lines(f.surge)
    if f.steps:
        ordered = sorted(f.steps, key=lambda s: s.rate)
        at_knee = next((s for s in ordered if s.rate == found), ordered[0])
        beyond = next((s for s in ordered if s.rate > at_knee.rate), None)
        shown = [at_knee] + ([beyond] if beyond is not None else [])
        lines += [
            "",
            "Per hop at the knee (or the lowest rate) and at the next rate, where the queue "
            "builds (means in ms from the services' histograms over each step; relays and "
            "consumers handle every event, not only these reports):",
            "",
            "| hop | " + " | ".join(f"{s.rate:g}/s" for s in shown) + " |",
            "|---|" + "---|" * len(shown),
            *(
                f"| {name} | " + " | ".join(ms(s.hops_ms.get(name, math.nan)) for s in shown) + " |"
                for name in at_knee.hops_ms
            ),
            "| **202 → offer on the stream, mean** | "
            + " | ".join(
                ms(statistics.fmean(s.latencies_s) * 1000 if s.latencies_s else math.nan)
                for s in shown
            )
            + " |",
        ]
    rss_verdict = "met" if all(v < 300 for v in f.rss_mb.values()) else "missed"
    lines += [
        "",
        "Memory after the run: "
        + ", ".join(f"{name} {mb:.0f} MB RSS" for name, mb in sorted(f.rss_mb.items()))
        + f" (target < 300 MB each: {rss_verdict}); "
        f"Redis {f.redis_keys:,} keys, {f.redis_mb:.0f} MB used.",
    ]
    return "\n".join(lines)


def cpu_cells(s: Step) -> str:
    """CPU ms per report for each service, in the table's order (the locator's includes
    its share of the pings, which run at the same rate throughout)."""
    names = ("intake", "dispatch", "volunteer-locator", "notification")
    return " / ".join(ms(s.cpu_ms_per_report.get(n, math.nan)) for n in names)


def idle_cells(s: Step) -> str:
    """Each service's CPU with pings but no reports, in % of a core."""
    names = ("intake", "dispatch", "volunteer-locator", "notification")
    return " / ".join(f"{s.idle_cpu_share.get(n, math.nan) * 100:.0f}" for n in names)


def surge_lines(s: Surge) -> list[str]:
    """The surge's paragraph."""
    recovered = s.recovered_after_s()
    tail = [latency for _, latency in s.tail]
    refused = sum(s.refused.values())
    settled = recovered is not None and recovered <= 30 and not s.tail_missed
    system_p50 = statistics.median(s.system_s) * 1000 if s.system_s else math.nan
    system_p99 = percentile(s.system_s, 99) * 1000 if s.system_s else math.nan
    return [
        "",
        f"**Surge**: {s.rate:g} reports/s for {s.seconds:g} s at spots of their own, then "
        f"{s.tail_rate:g}/s at watched spots for {s.tail_seconds:g} s.",
        "",
        "| check | result | verdict |",
        "|---|---|---|",
        f"| every report accepted (none refused because busy) | {s.accepted} accepted, "
        f"{refused} refused {dict(s.refused) if refused else ''} | "
        f"{'met' if not refused else 'missed'} |",
        f"| every report offered or flagged (none lost) | {s.offered} of {s.accepted} "
        + (
            f"(the last {s.settled_after_s:.0f} s after the surge's end, as dispatch worked "
            "through its backlog"
            if s.settled_after_s is not None
            else f"({s.lost} never, after waiting {SURGE_STALL_S:g} s with none settling"
        )
        + f"; {s.flagged} incidents flagged with nobody free) | "
        f"{'met' if not s.lost else 'missed'} |",
        f"| received → first offer during the surge (dispatch's records) | p50 "
        f"{ms(system_p50)} ms, p99 {ms(system_p99)} ms | |",
        "| p99 back under 100 ms within 30 s of the surge's end | "
        + (f"from {recovered:g} s after" if recovered is not None else "not within the tail")
        + f" (tail: {len(tail)} offered, {s.tail_missed} missed, p99 "
        f"{ms(percentile(tail, 99) * 1000 if tail else math.nan)} ms) | "
        f"{'met' if settled else 'missed'} |",
    ]
