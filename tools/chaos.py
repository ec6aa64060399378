"""A fault-injection run: ``make chaos`` (``python -m tools.chaos``).

It starts its own supervised embedded stack on free ports (SQLite, or a throwaway
PostgreSQL cluster with ``--database postgres``), drives steady traffic through the
public API with the city simulator's people (citizens reporting, responders pinging
and answering offers, a dispatcher resolving), and meanwhile injects faults into the
real processes, each at a random (seeded) moment:

- ``kill -9`` of each service in turn (the supervisor restarts it);
- a broker stall (SIGSTOP, SIGCONT 10 s later) and a broker restart (SIGKILL; the
  embedded broker comes back empty);
- a Redis stall and a Redis restart (SIGKILL; append-only, so it keeps its data);
- a few seconds without the database: SQLite files locked by another writer
  (``BEGIN EXCLUSIVE``), or the PostgreSQL server shut down and started again.

Then a checker in the spirit of Kafka's ProduceConsumeValidate and Jepsen's queue
checks judges, from the responders' streams and the API:

- every report answered 202 became exactly one incident, or was merged into one;
- every incident got an offer to an eligible responder, or a no-responder flag,
  within 30 s of its arrival or of the end of the last fault, whichever is later;
- no responder was ever booked twice;
- no dead letter came from a transient cause (the dead-letter topics are read every
  few seconds, since a broker restart empties them);
- every 1-3-5 milestone settled.

It writes the schedule and the counts to ``docs/reliability.md`` (one section per
database) and exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared.tasks import wait_until_set
from tools.devstack import ROOT, Stack, Supervisor
from tools.dlq import DeadLetter, read_dead_letters
from tools.embedded import Component, free_port, port_open, start_postgres
from tools.simulator.agents import Simulation
from tools.simulator.checks import (
    double_bookings,
    overlapping_offers,
    unresolved_milestones,
)
from tools.simulator.model import Endpoints, OfferSeen, PostedReport, SimConfig
from tools.simulator.rules import units_for
from tools.simulator.stack import embedded_endpoints, scaled_dispatch_env
from tools.simulator.wire import citizen_addresses, parse_time

SERVICES = ("intake", "dispatch", "volunteer-locator", "notification")
ALL_FAULTS = (
    *(f"kill -9 {name}" for name in SERVICES),
    "broker stall",
    "broker restart",
    "redis stall",
    "redis restart",
    "database outage",
)
ACTION_WITHIN_S = 30.0
# How long the apps keep an idle connection: below uvicorn's 5 s keep-alive.
KEEPALIVE_S = 1.0
# Words in a dead letter's reason that say its cause could have cleared by itself.
TRANSIENT_MARKERS = (
    "OperationalError",
    "InterfaceError",
    "ConnectionError",
    "Timeout",
    "TimeoutError",
    "BrokerUnavailable",
    "TransientError",
    "BusyLoadingError",
    "database is locked",
    "ConnectError",
    "ReadError",
    "KafkaConnectionError",
    "ConnectionRefused",
)


@dataclass
class FaultRecord:
    """One injected fault: what, when it began and when the system had it back."""

    name: str
    planned_at_s: float
    hold_s: float
    started_at: float = 0.0
    ended_at: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class ChaosConfig:
    """What to run."""

    duration_s: float = 180.0
    reports_per_s: float = 5.0
    responders_per_kind: int = 15
    faults: tuple[str, ...] = ALL_FAULTS
    stall_s: float = 10.0
    db_outage_s: float = 5.0
    database: str = "sqlite"
    seed: int = 1
    time_scale: float = 10.0
    drain_timeout_s: float = 90.0
    warmup_s: float = 5.0
    live: bool = True


@dataclass
class Findings:
    """What the checker found; empty lists mean nothing was lost."""

    reports: int = 0
    incidents: int = 0
    merged: int = 0
    offers: int = 0
    flagged: int = 0
    dead_letters: int = 0
    lost_reports: list[str] = field(default_factory=list)
    late_or_no_action: list[str] = field(default_factory=list)
    ineligible_offers: list[str] = field(default_factory=list)
    double_bookings: list[str] = field(default_factory=list)
    transient_dead_letters: list[str] = field(default_factory=list)
    unsettled_milestones: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def failures(self) -> dict[str, list[str]]:
        """Each failed check with its findings."""
        checks = {
            "lost reports": self.lost_reports,
            "incidents without an offer or flag in time": self.late_or_no_action,
            "offers to ineligible responders": self.ineligible_offers,
            "double bookings": self.double_bookings,
            "dead letters from a transient cause": self.transient_dead_letters,
            "milestones not settled": self.unsettled_milestones,
        }
        return {name: found for name, found in checks.items() if found}

    @property
    def passed(self) -> bool:
        """Whether nothing was lost."""
        return not self.failures()


def plan_faults(config: ChaosConfig) -> list[FaultRecord]:
    """Each fault at a random (seeded) moment: the run is cut into one slot per fault
    (in a shuffled order), and each fault starts somewhere in its slot and ends in it."""
    rng = random.Random(config.seed)
    names = list(config.faults)
    rng.shuffle(names)
    if not names:
        return []
    window = max(1.0, config.duration_s - config.warmup_s - 5.0)
    slot = window / len(names)
    plan = []
    for i, name in enumerate(names):
        hold = hold_s(name, config)
        latest = max(0.0, slot - hold - 1.0)
        at = config.warmup_s + i * slot + rng.uniform(0.0, latest)
        plan.append(FaultRecord(name=name, planned_at_s=round(at, 1), hold_s=hold))
    return plan


def hold_s(name: str, config: ChaosConfig) -> float:
    """How long a fault holds the component down (0 for a kill or a restart)."""
    if name.endswith("stall"):
        return config.stall_s
    if name == "database outage":
        return config.db_outage_s
    return 0.0


class SupervisorThread:
    """Runs the supervisor's checks every half second, as ``make run`` does."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self.supervisor.check()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(30)


class Injector:
    """Does the faults to the stack's real processes."""

    def __init__(self, stack: Stack, postgres: Component | None, config: ChaosConfig) -> None:
        self.stack = stack
        self.postgres = postgres
        self.config = config

    def component(self, name: str) -> Component:
        """The broker or Redis."""
        return next(c for c in self.stack.components if c.name == name)

    def inject(self, fault: FaultRecord) -> None:
        """Do one fault and wait until the faulty component is back (blocking)."""
        name = fault.name
        fault.started_at = time.time()
        if name.startswith("kill -9 "):
            service = name.removeprefix("kill -9 ")
            process = self.stack.processes[service]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            deadline = time.monotonic() + 60
            while self.stack.processes.get(service) is process:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service} was not restarted within 60 s")
                time.sleep(0.1)
            self.stack.wait_ready(timeout=120, names=[service])
            fault.note = "restarted by the supervisor and ready"
        elif name.endswith("stall"):
            process = self.component(name.split()[0]).process
            os.kill(process.pid, signal.SIGSTOP)
            try:
                time.sleep(fault.hold_s)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            fault.note = f"SIGSTOP, SIGCONT {fault.hold_s:g} s later"
        elif name.endswith("restart"):
            component = self.component(name.split()[0])
            old = component.process
            os.kill(old.pid, signal.SIGKILL)
            old.wait(10)
            deadline = time.monotonic() + 60
            while component.process is old or not port_open(component.port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{component.name} was not restarted within 60 s")
                time.sleep(0.1)
            fault.note = "SIGKILL, restarted by the supervisor"
        elif name == "database outage":
            fault.note = self.database_outage(fault.hold_s)
        else:
            raise ValueError(f"unknown fault {name!r}")
        fault.ended_at = time.time()

    def database_outage(self, seconds: float) -> str:
        """A few seconds without the database."""
        if self.postgres is not None:
            server = self.postgres
            # SIGINT is PostgreSQL's fast shutdown: every connection is closed.
            os.killpg(server.process.pid, signal.SIGINT)
            server.process.wait(30)
            time.sleep(seconds)
            server.respawn(timeout_s=30)
            return f"PostgreSQL shut down (fast), started again {seconds:g} s later"
        holders = []
        try:
            for spec in self.stack.services:
                path = self.stack.run_dir / f"{spec.name}.db"
                if not path.exists():
                    continue
                connection = sqlite3.connect(path, timeout=30, isolation_level=None)
                connection.execute("BEGIN EXCLUSIVE")
                holders.append(connection)
            time.sleep(seconds)
        finally:
            for connection in holders:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                connection.close()
        return f"every service's SQLite file locked by another writer for {seconds:g} s"


class ChaosSimulation(Simulation):
    """The simulator's town, with apps that retry as real ones do while a service is away,
    and a dispatcher's eye on when each incident first got an offer or a flag."""

    def __init__(self, endpoints: Endpoints, config: SimConfig) -> None:
        super().__init__(endpoints, config)
        # The simulator's own clients are replaced before any use.
        self._unused = [self.http, *self.citizens]
        # Idle connections are dropped well before uvicorn closes them (5 s keep-alive):
        # with both at 5 s, a request sent on a connection the server is closing fails
        # with a ReadError that no service caused. A refused connection (a service being
        # restarted) is tried again with backoff.
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_S
        )
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, read=None),
            transport=httpx.AsyncHTTPTransport(retries=8, limits=limits),
        )
        self.citizens = [
            httpx.AsyncClient(
                timeout=10.0,
                transport=httpx.AsyncHTTPTransport(
                    retries=8,
                    limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
                    local_address=address,
                ),
            )
            for address in citizen_addresses(endpoints.intake, 64)
        ]
        self.first_flagged: dict[str, float] = {}
        self.failed_posts = 0

    async def post_report(self, category: str, spot: tuple[float, float]) -> None:
        """A citizen's alert; retried with the same Idempotency-Key until intake answers
        202 (or for a minute), as the app would."""
        client = self.rng.choice(self.citizens)
        body = {"category": category, "location": {"lat": spot[0], "lon": spot[1]}}
        key = str(uuid.uuid4())
        deadline = time.time() + 60
        delay = 0.5
        while time.time() < deadline:
            try:
                answer = await client.post(
                    f"{self.ep.intake}/v1/reports", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.HTTPError:
                self.counters["report posts retried (no answer)"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if answer.status_code == 202:
                got = answer.json()
                self.reports.append(
                    PostedReport(
                        got["report_id"], got["tracking_token"], category, spot, time.time()
                    )
                )
                self.counters["reports"] += 1
                return
            self.counters[f"report posts retried ({answer.status_code})"] += 1
            await asyncio.sleep(float(answer.headers.get("retry-after", delay)))
            delay = min(delay * 2, 5.0)
        self.counters["reports given up"] += 1

    async def answer(self, r: Any, offer: OfferSeen, choice: str) -> None:
        """Answer as the simulator does; a request that got no answer ends the hold as
        far as the app knows (the system's records still judge double bookings)."""
        try:
            await super().answer(r, offer, choice)
        except httpx.HTTPError:
            self.counters["answers without a reply"] += 1
            offer.release_requested_at = min(offer.release_requested_at, time.time())
            offer.released_at = min(offer.released_at, time.time())
            r.working = False
            self.release(r, offer)

    async def watch_flags(self) -> None:
        """When each incident was first seen flagged as having no responder."""
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                for item in await self.open_incidents():
                    if item["no_responder"]:
                        self.first_flagged.setdefault(str(item["incident_id"]), time.time())


async def sample_dead_letters(
    broker: str, into: dict[str, DeadLetter], stop: asyncio.Event
) -> None:
    """Read the dead-letter topics every few seconds (a broker restart empties them)."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            for letter in await asyncio.wait_for(read_dead_letters(broker), 10):
                into.setdefault(letter.id, letter)
        await wait_until_set(stop, 3.0)


async def drive(
    stack: Stack, injector: Injector, config: ChaosConfig, plan: list[FaultRecord]
) -> Findings:
    """Traffic plus faults, then the drain and the checks."""
    sim_config = SimConfig(
        duration_s=config.duration_s,
        responders_per_kind=config.responders_per_kind,
        reports_per_s=config.reports_per_s,
        accept_probability=0.7,
        decline_share=0.5,
        time_scale=config.time_scale,
        ping_interval_s=1.0,
        offer_timeout_s=30.0 / config.time_scale,
        drain_timeout_s=config.drain_timeout_s,
        seed=config.seed,
        live=config.live,
        cleanup=False,
    )
    sim = ChaosSimulation(embedded_endpoints(stack), sim_config)
    letters: dict[str, DeadLetter] = {}
    sampling = asyncio.Event()
    broker = stack.kafka_bootstrap_servers or ""
    try:
        await sim.setup()
        for job in (sim.pinger, sim.patrol, sim.dispatcher, sim.console, sim.watch_flags):
            sim.tasks.append(asyncio.create_task(job(), name=job.__name__))
        sim.tasks.append(asyncio.create_task(sample_dead_letters(broker, letters, sampling)))
        sim.started_reports = time.time()
        sim.log(f"reports at {config.reports_per_s:g}/s for {config.duration_s:g}s with faults")
        faults = asyncio.create_task(run_faults(injector, plan, sim, letters, broker))
        posting: list[asyncio.Task[None]] = []
        original = sim.post_report

        async def tracked(category: str, spot: tuple[float, float]) -> None:
            posting.append(asyncio.current_task())  # type: ignore[arg-type]
            await original(category, spot)

        sim.post_report = tracked  # type: ignore[method-assign]
        await sim.citizens_report()
        await faults
        # Reports still being retried by their citizens land before the drain.
        await asyncio.gather(*posting, return_exceptions=True)
        sim.log(f"no more reports; draining (≤ {config.drain_timeout_s:g}s)")
        waited = await sim.drain()
        sampling.set()
        for letter in await read_dead_letters(broker):
            letters.setdefault(letter.id, letter)
        sim.stopping.set()
        # The simulated people stop acting before the records are read, so that the
        # incidents, read one by one, are one consistent picture (a dispatcher resolving
        # an incident between two reads would show a hold that never was).
        for task in sim.tasks:
            task.cancel()
        await asyncio.gather(*sim.tasks, return_exceptions=True)
        incidents = await sim.collect()
        lost = await reports_lost(sim, incidents)
        return check(sim, incidents, letters, plan, waited, lost)
    finally:
        sim.stopping.set()
        sampling.set()
        for task in sim.tasks:
            task.cancel()
        await asyncio.gather(*sim.tasks, return_exceptions=True)
        for client in (sim.http, *sim.citizens, *sim._unused):
            await client.aclose()


async def run_faults(
    injector: Injector,
    plan: Sequence[FaultRecord],
    sim: ChaosSimulation,
    letters: dict[str, DeadLetter],
    broker: str,
) -> None:
    """Each fault at its planned moment, one after the other."""
    for fault in plan:
        await asyncio.sleep(max(0.0, sim.started_reports + fault.planned_at_s - time.time()))
        if fault.name == "broker restart":
            # What the dead-letter topics hold now is about to vanish.
            with contextlib.suppress(Exception):
                for letter in await read_dead_letters(broker):
                    letters.setdefault(letter.id, letter)
        sim.log(f"FAULT {fault.name}")
        try:
            await asyncio.to_thread(injector.inject, fault)
        except Exception as exc:
            fault.note = f"injection failed: {exc!r}"
            fault.ended_at = time.time()
        sim.log(f"FAULT {fault.name} over ({fault.note})")


def reporter_behind(status: str | None, incident: Mapping[str, Any] | None) -> bool:
    """Whether a reporter's view misses what its incident's record shows: a report still
    ``received`` although its incident was offered to someone or closed. (An incident
    still waiting for a free responder leaves its reporter at ``received``, rightly; the
    offer-or-flag check judges that wait.)"""
    if status is None:
        return True
    if status != "received" or incident is None:
        return False
    return bool(incident["offers"]) or incident["status"] != "open"


async def reports_lost(
    sim: ChaosSimulation, incidents: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Reports in no incident (or in several), and reports whose reporter's view misses
    their incident's record for longer than ``ACTION_WITHIN_S`` (intake follows the
    incidents topic, so its view may trail the record by a moment)."""
    holders: dict[str, list[str]] = {}
    for incident_id, incident in incidents.items():
        for report in incident["reports"]:
            holders.setdefault(str(report["report_id"]), []).append(incident_id)
    lost = [
        f"report {r.report_id}: in incidents {holders.get(r.report_id) or '[]'}"
        for r in sim.reports
        if len(holders.get(r.report_id, [])) != 1
    ]

    async def status_of(report: PostedReport) -> str | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = await sim.http.get(
                f"{sim.ep.intake}/v1/reports/{report.report_id}",
                headers={"authorization": f"Bearer {report.tracking_token}"},
            )
            if answer.status_code == 200:
                return str(answer.json().get("status"))
        return None

    def incident_of(report: PostedReport) -> Mapping[str, Any] | None:
        held = holders.get(report.report_id, [])
        return incidents[held[0]] if len(held) == 1 else None

    pending = list(sim.reports)
    deadline = time.time() + ACTION_WITHIN_S
    while True:
        statuses = await asyncio.gather(*(status_of(r) for r in pending))
        behind = [
            (r, status)
            for r, status in zip(pending, statuses, strict=True)
            if reporter_behind(status, incident_of(r))
        ]
        if not behind or time.time() > deadline:
            break
        pending = [r for r, _ in behind]
        await asyncio.sleep(1.0)
    lost += [f"report {r.report_id}: reporter sees {status or 'no answer'}" for r, status in behind]
    return lost


def first_flag_at(incident: Mapping[str, Any]) -> float | None:
    """When dispatch first flagged the incident as having nobody available, from its
    own timeline (as offers are judged by their ``offered_at``)."""
    times = [
        parse_time(entry["at"])
        for entry in incident.get("timeline", [])
        if entry["type"] == "NoResponderAvailable"
    ]
    return min(times, default=None)


def late_action(
    incident: Mapping[str, Any], *, flagged_at: float | None, last_fault_end: float
) -> str | None:
    """Why an incident failed the offer-or-flag check, or None: it needs a first offer
    or flag within ``ACTION_WITHIN_S`` of its arrival or of the end of the last fault,
    whichever is later, unless a dispatcher closed it before then."""
    deadline = max(parse_time(incident["received_at"]), last_fault_end) + ACTION_WITHIN_S
    acted = [parse_time(o["offered_at"]) for o in incident["offers"]]
    if flagged_at is not None:
        acted.append(flagged_at)
    first = min(acted, default=None)
    closed = parse_time(incident["closed_at"]) if incident.get("closed_at") else None
    if first is None and closed is not None and closed <= deadline:
        return None  # closed by a dispatcher before its deadline: nothing left to offer
    if first is not None and first <= deadline:
        return None
    when = "never" if first is None else f"{first - deadline + ACTION_WITHIN_S:.1f}s"
    return f"first offer or flag {when} after max(arrival, last fault end)"


def check(
    sim: ChaosSimulation,
    incidents: Mapping[str, Mapping[str, Any]],
    letters: Mapping[str, DeadLetter],
    plan: Sequence[FaultRecord],
    waited: bool,
    lost: list[str],
) -> Findings:
    """The checks; see the module docstring."""
    found = Findings(
        reports=len(sim.reports),
        incidents=sum(1 for i in incidents.values() if i["status"] != "merged"),
        merged=sum(1 for i in incidents.values() if i["status"] == "merged"),
        offers=sum(len(i["offers"]) for i in incidents.values()),
        dead_letters=len(letters),
        counters=dict(sim.counters),
    )
    found.lost_reports = lost
    last_fault_end = max((f.ended_at for f in plan), default=0.0)
    for incident_id, incident in incidents.items():
        if incident["status"] == "merged":
            continue
        seen = [sim.first_flagged.get(incident_id), first_flag_at(incident)]
        flagged = min((t for t in seen if t is not None), default=None)
        if flagged is not None:
            found.flagged += 1
        late = late_action(incident, flagged_at=flagged, last_fault_end=last_fault_end)
        if late is not None:
            found.late_or_no_action.append(
                f"incident {incident_id} ({incident['category']}): {late}"
            )
        for offer in incident["offers"]:
            responder = sim.responders.get(str(offer["responder_id"]))
            units = units_for(sim.plans, incident["category"])
            if responder is None or not any(
                u.fits(responder.kind, responder.skills) for u in units
            ):
                found.ineligible_offers.append(
                    f"offer {offer['offer_id']} ({incident['category']}) to "
                    f"{responder.kind if responder else 'an unknown responder'}"
                )
    found.double_bookings = double_bookings(incidents.values()) + overlapping_offers(
        list(sim.offers.values())
    )
    for letter in letters.values():
        if any(marker in letter.reason for marker in TRANSIENT_MARKERS):
            found.transient_dead_letters.append(
                f"{letter.dlq_topic} {letter.original_type} (group {letter.group}): "
                f"{letter.reason[:200]}"
            )
    found.unsettled_milestones, _ = unresolved_milestones(incidents, waited=waited, now=time.time())
    return found


def run(config: ChaosConfig) -> tuple[list[FaultRecord], Findings, float]:
    """Start a stack, run traffic and faults, check; returns the schedule, the findings
    and the wall time of the run."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"qrd-chaos-{config.database}-"))
    postgres: Component | None = None
    started = time.time()
    if config.database == "postgres":
        # A directory of its own: the run directory is private to this user, and as root
        # the cluster runs as ``postgres``, which could not reach a directory inside it.
        postgres = start_postgres(free_port())
    stack = Stack.on_free_ports(
        run_dir,
        database_url=postgres.url if postgres else None,
        service_env={"dispatch": scaled_dispatch_env(config.time_scale)},
    )
    watcher = SupervisorThread(Supervisor(stack))
    plan = plan_faults(config)
    print(f"chaos on {config.database}: stack in {run_dir}; faults planned:", flush=True)
    for fault in plan:
        print(f"  at {fault.planned_at_s:6.1f}s  {fault.name}", flush=True)
    try:
        stack.start(timeout=180)
        watcher.start()
        findings = asyncio.run(drive(stack, Injector(stack, postgres, config), config, plan))
        return plan, findings, time.time() - started
    finally:
        watcher.stop()
        stack.stop()
        if postgres is not None:
            postgres.stop()


def section(
    config: ChaosConfig, plan: Sequence[FaultRecord], found: Findings, wall_s: float
) -> str:
    """The Markdown section of one run for docs/reliability.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {config.database}",
        "",
        f"Run {when}: `python -m tools.chaos --database {config.database} "
        f"--duration {config.duration_s:g} --rate {config.reports_per_s:g} --seed {config.seed}` "
        f"({wall_s:.0f} s wall time). Result: **{'PASS' if found.passed else 'FAIL'}**.",
        "",
        "| at (s) | fault | held (s) | back after (s) | how |",
        "|---:|---|---:|---:|---|",
    ]
    origin = min((f.started_at - f.planned_at_s for f in plan if f.started_at), default=0.0)
    for f in plan:
        at = f.started_at - origin if f.started_at else f.planned_at_s
        back = f.ended_at - f.started_at if f.ended_at else 0.0
        lines.append(f"| {at:.1f} | {f.name} | {f.hold_s:g} | {back:.1f} | {f.note} |")
    c = found.counters
    lines += [
        "",
        "| count | value |",
        "|---|---:|",
        f"| reports answered 202 | {found.reports} |",
        f"| report posts retried by citizens | "
        f"{sum(v for k, v in c.items() if k.startswith('report posts retried'))} |",
        f"| reports given up | {c.get('reports given up', 0)} |",
        f"| incidents (merged) | {found.incidents} ({found.merged}) |",
        f"| offers | {found.offers} |",
        f"| incidents flagged no-responder | {found.flagged} |",
        f"| dead letters | {found.dead_letters} |",
        f"| lost reports | {len(found.lost_reports)} |",
        f"| incidents without offer or flag in 30 s | {len(found.late_or_no_action)} |",
        f"| offers to ineligible responders | {len(found.ineligible_offers)} |",
        f"| double bookings | {len(found.double_bookings)} |",
        f"| dead letters from a transient cause | {len(found.transient_dead_letters)} |",
        f"| milestones not settled | {len(found.unsettled_milestones)} |",
        "",
    ]
    for name, items in found.failures().items():
        lines.append(f"{name} (first 10 of {len(items)}):")
        lines.append("")
        lines += [f"- {item}" for item in items[:10]]
        lines.append("")
    return "\n".join(lines)


DOC_HEADER = """# Reliability: the fault-injection run

`make chaos` (`python -m tools.chaos`, see its docstring) starts its own supervised
embedded stack, drives steady traffic through the public API and injects faults into
the real processes: `kill -9` of each service, a broker stall and restart, a Redis
stall and restart, a few seconds without the database. The checker then counts what
was lost.

The sections named after a database are written by the tool; the others say what the
runs found along the way and what fixed it. A short run (40 s, three faults) is part of
`make test` (`tests/e2e/test_chaos.py`).
"""


def write_doc(path: Path, database: str, text: str) -> None:
    """Replace this database's section of the document, keeping the other's."""
    sections: dict[str, str] = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                sections[current] = ""
            if current is not None:
                sections[current] += line + "\n"
    sections[database] = text.rstrip() + "\n"
    body = "\n".join(sections[name] for name in sorted(sections))
    path.write_text(DOC_HEADER + "\n" + body)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos run; exit 1 on any loss."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=5.0, help="reports per second")
    parser.add_argument("--responders", type=int, default=15, help="responders of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stall", type=float, default=10.0, help="seconds of each stall")
    parser.add_argument("--db-outage", type=float, default=5.0, help="seconds without the db")
    parser.add_argument(
        "--faults",
        default=",".join(ALL_FAULTS),
        help="comma-separated, of: " + ", ".join(ALL_FAULTS),
    )
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--no-doc", action="store_true", help="do not write the document")
    args = parser.parse_args(argv)
    # The dead-letter reader's client complains while the broker is away; that is the point.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        parser.error(f"unknown faults: {unknown}")
    config = ChaosConfig(
        duration_s=args.duration,
        reports_per_s=args.rate,
        responders_per_kind=args.responders,
        faults=faults,
        stall_s=args.stall,
        db_outage_s=args.db_outage,
        database=args.database,
        seed=args.seed,
    )
    plan, found, wall_s = run(config)
    text = section(config, plan, found, wall_s)
    print("\n" + text, flush=True)
    if not args.no_doc:
        write_doc(args.doc, config.database, text)
        print(f"written to {args.doc}")
    return 0 if found.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
