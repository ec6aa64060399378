"""The city simulator: a synthetic town driving the system over its public API.

``make demo`` runs ``python -m tools.simulator``. It plays every app at once:

- the responder apps: responders of each kind register (as a dispatcher would),
  go on duty, patrol and stream their positions through ``POST /v1/locations/batch``
  (a gateway's service token), listen on their notification stream, accept offers
  with a set probability (else decline, or ignore them until they expire), travel
  to the incident at their travel mode's speed and report en route, on scene, cleared;
- the citizen apps: reports arrive as a Poisson process with a category mix, at
  random points of the demo district (``services/dispatch/data/grids.geojson``);
- a dispatcher who resolves an incident once its units have cleared and none of
  its 1-3-5 milestones is pending.

**Time.** The system's clock is real, so the simulation runs in real time. It can run
"faster" only through the system's own settings: with ``--time-scale K`` every
simulated duration is divided by K (think time, time on scene) and every speed
multiplied by K, and when the simulator starts its own stack (``--embedded``) it sets
dispatch's targets and offer timeout to the defaults divided by K (K=10: T1 6 s,
T3 18 s, T5 30 s, offers expire after 3 s). Rankings are unchanged by the scale
(every ETA is divided by the same K). Against a running stack the scale is 1 unless
that stack was started with matching settings.

**Correctness rules**, checked at the end from the simulator's own ground truth
and the system's records (``GET /v1/incidents/{id}``, ``GET /v1/reports/{id}``):

- *nearest*: for every offer, no other responder was eligible (kind and skills
  of a plan unit the offered responder fits), on duty, free and not already tried
  for that incident at claim time, and clearly closer by ETA. The claim time is the
  offer event's ``occurred_at``. A responder counts as free only outside every hold
  the simulator saw (from its offer's claim to its decline, expiry or clearing),
  widened by the ingest-lag allowance on both sides. Positions are the simulator's
  true positions at claim time; since the system only knows pings that are up to one
  ping interval plus the ingest lag old, each responder's ETA is uncertain by the
  distance it actually moved in that window over its speed, plus 1 s for the geo
  index's rounding. A "clearly closer" rival beats the offered ETA even after both
  uncertainties are added against it.
- *no double booking*: from dispatch's records, no responder's offers and
  assignments on different incidents overlap in time; and no offer reached a
  responder while the simulator saw them holding another one.
- *no lost report*: every report answered with 202 is found in exactly one
  incident, and its reporter's view has moved past ``received``.
- *milestones resolved*: no milestone is still pending after its deadline (plus a
  grace); if the run waited past the last deadline, none is pending at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.dispatch.domain import DEFAULT_STAGES, ResponsePlan
from services.dispatch.grids import DEMO_GRIDS
from services.dispatch.plans import load_plans, plan_for
from services.volunteer_locator.settings import DEFAULT_SPEEDS_KMH
from shared.auth import Role, mint_token

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
EARTH_RADIUS_M = 6_371_008.8
KINDS = ("patrol", "auxiliary", "volunteer")
# Travel modes (with weights) and the share with first aid, by kind.
FLEET: dict[str, tuple[dict[str, float], float]] = {
    "patrol": ({"car": 0.6, "motorbike": 0.4}, 0.5),
    "auxiliary": ({"motorbike": 0.5, "bicycle": 0.5}, 0.4),
    "volunteer": ({"foot": 0.6, "bicycle": 0.4}, 0.4),
}
CATEGORY_MIX: dict[str, float] = {
    "dispute": 0.18,
    "theft": 0.18,
    "suspicious": 0.14,
    "medical": 0.10,
    "violence": 0.08,
    "traffic": 0.08,
    "fraud": 0.08,
    "fire": 0.04,
    "missing_person": 0.04,
    "other": 0.08,
}
DEFAULT_URLS = {
    "intake": "http://127.0.0.1:8001",
    "dispatch": "http://127.0.0.1:8002",
    "volunteer-locator": "http://127.0.0.1:8003",
    "notification": "http://127.0.0.1:8004",
}
TICK_S = 0.2
ARRIVED_M = 15.0
CLAIM_SLACK_S = 0.5
GEO_ROUNDING_S = 1.0
DEADLINE_GRACE_S = 3.0


# --- geometry ---------------------------------------------------------------------


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def step_toward(
    here: tuple[float, float], there: tuple[float, float], metres: float
) -> tuple[float, float]:
    """The point ``metres`` from ``here`` toward ``there`` (or ``there`` if closer)."""
    gap = distance_m(here, there)
    if gap <= metres or gap == 0:
        return there
    share = metres / gap
    return (here[0] + (there[0] - here[0]) * share, here[1] + (there[1] - here[1]) * share)


@dataclass(frozen=True)
class Grid:
    """One police grid of the town: a polygon with its office and zone tier."""

    name: str
    office: str | None
    ring: tuple[tuple[float, float], ...]  # (lon, lat), as GeoJSON has it

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lat, max lat, min lon, max lon)."""
        lons, lats = [p[0] for p in self.ring], [p[1] for p in self.ring]
        return min(lats), max(lats), min(lons), max(lons)

    def contains(self, lat: float, lon: float) -> bool:
        """Ray casting on the outer ring."""
        inside = False
        n = len(self.ring)
        for i in range(n):
            x1, y1 = self.ring[i]
            x2, y2 = self.ring[(i + 1) % n]
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


@dataclass(frozen=True)
class Town:
    """The synthetic town: the grids of the shipped demo district."""

    grids: tuple[Grid, ...]

    @classmethod
    def load(cls, path: Path = DEMO_GRIDS) -> Town:
        """Read a GeoJSON FeatureCollection of polygons."""
        document = json.loads(path.read_text(encoding="utf-8"))
        grids = []
        for feature in document["features"]:
            geometry = feature["geometry"]
            polygons = (
                [geometry["coordinates"]]
                if geometry["type"] == "Polygon"
                else geometry["coordinates"]
            )
            for polygon in polygons:
                grids.append(
                    Grid(
                        name=feature["properties"]["grid"],
                        office=feature["properties"].get("office"),
                        ring=tuple((float(p[0]), float(p[1])) for p in polygon[0]),
                    )
                )
        return cls(tuple(grids))

    def random_spot(self, rng: random.Random) -> tuple[Grid, tuple[float, float]]:
        """A uniformly random point of the town and its grid."""
        weights = [(b[1] - b[0]) * (b[3] - b[2]) for b in (g.bbox for g in self.grids)]
        while True:
            grid = rng.choices(self.grids, weights=weights)[0]
            lat0, lat1, lon0, lon1 = grid.bbox
            lat, lon = rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)
            if grid.contains(lat, lon):
                return grid, (lat, lon)


# --- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where the four services listen, and the tokens the simulator acts with."""

    intake: str
    dispatch: str
    locator: str
    notification: str
    dispatcher_token: str
    service_token: str


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Durations are real seconds unless named ``sim``."""

    duration_s: float = 60.0
    responders_per_kind: int = 15
    reports_per_s: float = 0.5
    accept_probability: float = 0.8
    decline_share: float = 0.5  # of the offers not accepted; the rest are ignored
    time_scale: float = 1.0
    ping_interval_s: float = 1.0
    ingest_lag_s: float = 1.0  # allowance for a ping to reach the geo index
    think_sim_s: tuple[float, float] = (3.0, 10.0)
    scene_sim_s: float = 120.0
    patrol_pace: float = 0.3  # share of the mode's speed while patrolling
    drain_timeout_s: float = 90.0
    offer_timeout_s: float = 30.0  # the system's, for expecting expiries
    category_mix: Mapping[str, float] = field(default_factory=lambda: dict(CATEGORY_MIX))
    plans_path: str | None = None
    seed: int = 1
    live: bool = True  # print a status line every few seconds
    cleanup: bool = True  # resolve leftover incidents and go off duty at the end


def scaled_dispatch_env(time_scale: float) -> dict[str, str]:
    """Dispatch settings for a stack that runs ``time_scale`` times faster than life."""
    targets = {s.stage: max(1, round(s.target_s / time_scale)) for s in DEFAULT_STAGES}
    return {
        "TARGET_OVERRIDES_S": json.dumps(targets),
        "OFFER_TIMEOUT_S": str(round(30.0 / time_scale, 2)),
        "RETRY_INTERVAL_S": str(max(0.5, round(15.0 / time_scale, 2))),
    }


# --- what happened ------------------------------------------------------------------


@dataclass
class SimResponder:
    """One simulated responder: their app, their position and what they are doing."""

    responder_id: str
    token: str
    kind: str
    travel_mode: str
    skills: frozenset[str]
    speed_mps: float  # the system's speed for the mode (ETA units)
    at: tuple[float, float]
    waypoint: tuple[float, float]
    on_duty_at: float = math.inf
    odometer_m: float = 0.0
    holding: str | None = None  # the offer held right now (offered, or accepted and working)
    working: bool = False  # accepted: travelling to or at an incident
    track: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, lat, lon, odo

    def position_at(self, t: float) -> tuple[tuple[float, float], float]:
        """Where they were at ``t`` (the last sample before it) and the odometer then."""
        best = self.track[0] if self.track else (0.0, self.at[0], self.at[1], 0.0)
        lo, hi = 0, len(self.track) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.track[mid][0] <= t:
                best, lo = self.track[mid], mid + 1
            else:
                hi = mid - 1
        return (best[1], best[2]), best[3]


@dataclass
class OfferSeen:
    """An offer as it reached a responder's stream."""

    offer_id: str
    incident_id: str
    responder_id: str
    category: str
    location: tuple[float, float]
    claimed_at: float  # the offer event's occurred_at
    received_at: float
    eta_s: float
    expires_at: float
    outcome: str = "pending"  # accepted, declined, ignored, conflict, refused (busy)
    # The hold ends in the system between these two: not before the app asked (decline,
    # cleared) or the offer expired, and not after the app saw the answer.
    release_requested_at: float = math.inf
    released_at: float = math.inf


@dataclass
class PostedReport:
    """A report the citizen app got a 202 for."""

    report_id: str
    tracking_token: str
    category: str
    location: tuple[float, float]
    accepted_at: float


@dataclass
class Checks:
    """The correctness checks' findings; every list empty means all passed."""

    offers_checked: int = 0
    reports_checked: int = 0
    incidents_checked: int = 0
    waited_past_last_deadline: bool = False
    nearest_violations: list[str] = field(default_factory=list)
    double_bookings: list[str] = field(default_factory=list)
    lost_reports: list[str] = field(default_factory=list)
    unresolved_milestones: list[str] = field(default_factory=list)
    not_yet_due: int = 0

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return not (
            self.nearest_violations
            or self.double_bookings
            or self.lost_reports
            or self.unresolved_milestones
        )


@dataclass
class SimResult:
    """What a run did and found."""

    reports: list[PostedReport]
    offers: list[OfferSeen]
    incidents: dict[str, dict[str, Any]]
    checks: Checks
    counters: Counter[str]
    table: str


# --- SSE ------------------------------------------------------------------------------


async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def parse_time(value: str) -> float:
    """An ISO 8601 time as a Unix timestamp."""
    return datetime.fromisoformat(value).timestamp()


def citizen_addresses(intake_url: str, count: int) -> list[str | None]:
    """Source addresses for citizens' posts: many loopback ones on this machine, so the
    per-address rate limit sees many phones, as it would in town; else the default."""
    host = urlsplit(intake_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or sys.platform != "linux":
        return [None]
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


# --- the simulation -------------------------------------------------------------------


class Simulation:
    """One run against one stack."""

    def __init__(self, endpoints: Endpoints, config: SimConfig) -> None:
        self.ep = endpoints
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.town = Town.load()
        self.plans = load_plans(config.plans_path)
        self.responders: dict[str, SimResponder] = {}
        self.reports: list[PostedReport] = []
        self.offers: dict[str, OfferSeen] = {}
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        self.started_reports = self.started
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.streams_ready: dict[str, asyncio.Event] = {}
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits)
        self.citizens = [
            httpx.AsyncClient(
                timeout=10.0,
                transport=httpx.AsyncHTTPTransport(local_address=address)
                if address
                else httpx.AsyncHTTPTransport(),
            )
            for address in citizen_addresses(endpoints.intake, 64)
        ]

    # --- small helpers

    def sim_s(self, seconds: float) -> float:
        """A simulated duration in real seconds."""
        return seconds / self.cfg.time_scale

    def desk(self) -> dict[str, str]:
        """The dispatcher's headers."""
        return {"authorization": f"Bearer {self.ep.dispatcher_token}"}

    def log(self, message: str) -> None:
        """A console line with the run's clock."""
        if self.cfg.live:
            print(f"[{time.time() - self.started:6.1f}s] {message}", flush=True)

    # --- setup

    async def register(self, kind: str, index: int) -> SimResponder:
        """Register one responder as the dispatcher would, then go on duty as their app."""
        modes, first_aid_share = FLEET[kind]
        mode = self.rng.choices(list(modes), weights=list(modes.values()))[0]
        skills = {"first_aid"} if self.rng.random() < first_aid_share else set()
        grid, spot = self.town.random_spot(self.rng)
        answer = await self.http.post(
            f"{self.ep.locator}/v1/responders",
            headers=self.desk(),
            json={
                "name": f"sim {kind} {index}",
                "kind": kind,
                "skills": sorted(skills),
                "travel_mode": mode,
                "office": grid.office,
                "grid": grid.name,
            },
        )
        answer.raise_for_status()
        body = answer.json()
        responder = SimResponder(
            responder_id=str(body["responder_id"]),
            token=body["token"],
            kind=kind,
            travel_mode=mode,
            skills=frozenset(skills),
            speed_mps=DEFAULT_SPEEDS_KMH[mode] / 3.6,
            at=spot,
            waypoint=self.town.random_spot(self.rng)[1],
        )
        responder.track.append((time.time(), spot[0], spot[1], 0.0))
        return responder

    async def go_on_duty(self, r: SimResponder) -> None:
        """Open the responder's stream, then put them on duty."""
        ready = self.streams_ready.setdefault(r.responder_id, asyncio.Event())
        self.tasks.append(asyncio.create_task(self.listen(r), name=f"stream-{r.responder_id}"))
        await asyncio.wait_for(ready.wait(), 15)
        answer = await self.http.put(
            f"{self.ep.locator}/v1/responders/{r.responder_id}/duty",
            headers={"authorization": f"Bearer {r.token}"},
            json={"on_duty": True},
        )
        answer.raise_for_status()
        r.on_duty_at = time.time()

    async def setup(self) -> None:
        """The fleet: registered, listening, on duty, with a first ping indexed."""
        plan = [(k, i) for k in KINDS for i in range(self.cfg.responders_per_kind)]
        made = await asyncio.gather(*(self.register(k, i) for k, i in plan))
        self.responders = {r.responder_id: r for r in made}
        await asyncio.gather(*(self.go_on_duty(r) for r in made))
        await self.send_pings()
        await asyncio.sleep(self.cfg.ingest_lag_s)
        self.log(
            f"{len(made)} responders on duty "
            f"({', '.join(f'{self.cfg.responders_per_kind} {k}' for k in KINDS)}), "
            f"streaming pings every {self.cfg.ping_interval_s:g}s"
        )

    # --- responders

    async def send_pings(self) -> None:
        """Every on-duty responder's position, as one gateway batch."""
        now = datetime.now(UTC).isoformat()
        pings = [
            {"responder_id": r.responder_id, "lat": r.at[0], "lon": r.at[1], "recorded_at": now}
            for r in self.responders.values()
        ]
        for i in range(0, len(pings), 1000):
            answer = await self.http.post(
                f"{self.ep.locator}/v1/locations/batch",
                headers={"authorization": f"Bearer {self.ep.service_token}"},
                json={"pings": pings[i : i + 1000]},
            )
            if answer.status_code != 202:
                self.counters["ping batches refused"] += 1
            else:
                self.counters["pings"] += len(pings[i : i + 1000])

    async def pinger(self) -> None:
        """The gateway: a batch of everyone's position every ping interval."""
        while not self.stopping.is_set():
            await asyncio.sleep(self.cfg.ping_interval_s)
            with contextlib.suppress(httpx.HTTPError):
                await self.send_pings()

    def move(self, r: SimResponder, target: tuple[float, float], pace: float, dt: float) -> None:
        """Move toward ``target`` for ``dt`` real seconds at ``pace`` of the mode's speed."""
        metres = r.speed_mps * pace * self.cfg.time_scale * dt
        new = step_toward(r.at, target, metres)
        r.odometer_m += distance_m(r.at, new)
        r.at = new

    async def patrol(self) -> None:
        """Free responders wander between random waypoints; everyone's track is recorded."""
        last = time.time()
        while not self.stopping.is_set():
            await asyncio.sleep(TICK_S)
            now = time.time()
            dt, last = now - last, now
            for r in self.responders.values():
                if not r.working:
                    # Free, or only offered: carry on patrolling until they accept.
                    if distance_m(r.at, r.waypoint) < ARRIVED_M:
                        r.waypoint = self.town.random_spot(self.rng)[1]
                    self.move(r, r.waypoint, self.cfg.patrol_pace, dt)
                r.track.append((now, r.at[0], r.at[1], r.odometer_m))

    async def listen(self, r: SimResponder) -> None:
        """The responder app's live stream: offers come in here."""
        headers = {"authorization": f"Bearer {r.token}", "accept": "text/event-stream"}
        url = f"{self.ep.notification}/v1/responders/{r.responder_id}/stream"
        last_id: str | None = None
        while not self.stopping.is_set():
            try:
                if last_id:
                    headers["last-event-id"] = last_id
                async with self.http.stream("GET", url, headers=headers) as response:
                    response.raise_for_status()
                    self.streams_ready[r.responder_id].set()
                    async for _event, data in sse_messages(response):
                        message = json.loads(data)
                        if message.get("type") == "offer":
                            self.on_offer(r, message)
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                if self.stopping.is_set():
                    return
                self.counters["stream reconnects"] += 1
                self.log(f"stream of {r.kind} {r.responder_id[:8]} dropped ({exc!r}); reconnecting")
                await asyncio.sleep(0.5)

    def on_offer(self, r: SimResponder, message: dict[str, Any]) -> None:
        """An offer arrived: note it, then answer it like a person would."""
        location = message["location"]
        offer = OfferSeen(
            offer_id=message["offer_id"],
            incident_id=message["incident_id"],
            responder_id=r.responder_id,
            category=message["category"],
            location=(float(location["lat"]), float(location["lon"])),
            claimed_at=parse_time(message["occurred_at"]),
            received_at=time.time(),
            eta_s=float(message["eta_s"]),
            expires_at=parse_time(message["expires_at"]),
        )
        if offer.offer_id in self.offers:
            return  # a redelivery
        self.offers[offer.offer_id] = offer
        self.counters["offers"] += 1
        held = self.offers.get(r.holding) if r.holding else None
        if held is not None and held.release_requested_at > offer.claimed_at:
            # Booked twice (the checks report it); a person would turn the second one down.
            offer.outcome = "refused (busy)"
            self.tasks.append(asyncio.create_task(self.answer(r, offer, "decline")))
            return
        r.holding = offer.offer_id
        roll = self.rng.random()
        if roll < self.cfg.accept_probability:
            choice = "accept"
        elif roll < self.cfg.accept_probability + (1 - self.cfg.accept_probability) * (
            self.cfg.decline_share
        ):
            choice = "decline"
        else:
            choice = "ignore"
        self.tasks.append(asyncio.create_task(self.answer(r, offer, choice)))

    async def answer(self, r: SimResponder, offer: OfferSeen, choice: str) -> None:
        """Think, then accept (and go), decline, or let the offer lapse."""
        headers = {"authorization": f"Bearer {r.token}"}
        base = f"{self.ep.dispatch}/v1/offers/{offer.offer_id}"
        if choice == "ignore":
            offer.outcome = "ignored"
            self.counters["ignored"] += 1
            # The offer lapses on the system's clock; the hold ends then.
            offer.release_requested_at = offer.expires_at
            offer.released_at = offer.expires_at + self.cfg.ingest_lag_s
            await asyncio.sleep(max(0.0, offer.released_at - time.time()))
            self.release(r, offer)
            return
        if offer.outcome == "pending":
            await asyncio.sleep(self.sim_s(self.rng.uniform(*self.cfg.think_sim_s)))
        if choice == "decline":
            offer.release_requested_at = min(time.time(), offer.expires_at)
            answer = await self.http.post(f"{base}/decline", headers=headers)
            offer.released_at = time.time()
            if offer.outcome == "pending":
                offer.outcome = "declined" if answer.status_code == 200 else "conflict"
                self.counters["declined"] += 1
                self.release(r, offer)
            return
        answer = await self.http.post(f"{base}/accept", headers=headers)
        if answer.status_code != 200:
            offer.outcome = "conflict"
            offer.release_requested_at = min(time.time(), offer.expires_at)
            offer.released_at = time.time()
            self.counters["late accepts (409)"] += 1
            self.release(r, offer)
            return
        offer.outcome = "accepted"
        self.counters["accepted"] += 1
        r.working = True
        try:
            await self.respond(r, offer)
        finally:
            offer.release_requested_at = min(offer.release_requested_at, time.time())
            offer.released_at = time.time()
            r.working = False
            self.release(r, offer)

    @staticmethod
    def release(r: SimResponder, offer: OfferSeen) -> None:
        """The responder is free again as far as their app knows."""
        if r.holding == offer.offer_id:
            r.holding = None

    async def unit_status(self, r: SimResponder, incident_id: str, status: str) -> bool:
        """Report en route, on scene or cleared; false if the incident is closed."""
        answer = await self.http.post(
            f"{self.ep.dispatch}/v1/incidents/{incident_id}/units/{r.responder_id}/status",
            headers={"authorization": f"Bearer {r.token}"},
            json={"status": status},
        )
        if answer.status_code == 200:
            self.counters[status] += 1
            return True
        self.counters[f"{status} refused ({answer.status_code})"] += 1
        return False

    async def respond(self, r: SimResponder, offer: OfferSeen) -> None:
        """Go to the incident at full speed, stay on scene, clear."""
        if not await self.unit_status(r, offer.incident_id, "en_route"):
            return
        last = time.time()
        while distance_m(r.at, offer.location) > ARRIVED_M:
            await asyncio.sleep(TICK_S)
            now = time.time()
            self.move(r, offer.location, 1.0, now - last)
            last = now
            if self.stopping.is_set():
                return
        if not await self.unit_status(r, offer.incident_id, "on_scene"):
            return
        await asyncio.sleep(self.sim_s(self.cfg.scene_sim_s))
        offer.release_requested_at = time.time()
        await self.unit_status(r, offer.incident_id, "cleared")

    # --- citizens

    async def citizens_report(self) -> None:
        """Reports as a Poisson process until the duration is over."""
        categories = list(self.cfg.category_mix)
        weights = list(self.cfg.category_mix.values())
        deadline = self.started_reports + self.cfg.duration_s
        while True:
            await asyncio.sleep(self.rng.expovariate(self.cfg.reports_per_s))
            if time.time() >= deadline:
                return
            category = self.rng.choices(categories, weights=weights)[0]
            _, spot = self.town.random_spot(self.rng)
            self.tasks.append(asyncio.create_task(self.post_report(category, spot)))

    async def post_report(self, category: str, spot: tuple[float, float]) -> None:
        """One citizen's alert; a 429 is retried after Retry-After, as the app would."""
        client = self.rng.choice(self.citizens)
        body = {"category": category, "location": {"lat": spot[0], "lon": spot[1]}}
        key = str(uuid.uuid4())
        for _ in range(5):
            answer = await client.post(
                f"{self.ep.intake}/v1/reports", json=body, headers={"Idempotency-Key": key}
            )
            if answer.status_code == 429:
                self.counters["reports rate-limited"] += 1
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            answer.raise_for_status()
            got = answer.json()
            self.reports.append(
                PostedReport(got["report_id"], got["tracking_token"], category, spot, time.time())
            )
            self.counters["reports"] += 1
            return
        self.counters["reports given up"] += 1

    # --- the dispatcher

    async def incident(self, incident_id: str) -> dict[str, Any]:
        """``GET /v1/incidents/{id}``."""
        answer = await self.http.get(
            f"{self.ep.dispatch}/v1/incidents/{incident_id}", headers=self.desk()
        )
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body

    async def open_incidents(self) -> list[dict[str, Any]]:
        """The live queue."""
        answer = await self.http.get(
            f"{self.ep.dispatch}/v1/incidents", params={"status": "open"}, headers=self.desk()
        )
        answer.raise_for_status()
        queue: list[dict[str, Any]] = answer.json()
        return queue

    def ours(self, incident: Mapping[str, Any]) -> bool:
        """Whether an incident came from this run (a running stack has older ones)."""
        return parse_time(incident["received_at"]) >= self.started - 1

    async def dispatcher(self) -> None:
        """Resolve incidents whose units have all cleared and whose milestones are settled."""
        while not self.stopping.is_set():
            await asyncio.sleep(1.0)
            with contextlib.suppress(httpx.HTTPError):
                for item in await self.open_incidents():
                    # unit_count counts the units not yet cleared.
                    if not self.ours(item) or item["unit_count"] or item["open_offer_count"]:
                        continue
                    if any(m["state"] == "pending" for m in item["milestones"]):
                        continue
                    answer = await self.http.post(
                        f"{self.ep.dispatch}/v1/incidents/{item['incident_id']}/resolve",
                        headers=self.desk(),
                    )
                    if answer.status_code == 200:
                        self.counters["resolved"] += 1

    async def console(self) -> None:
        """A status line every few seconds."""
        while not self.stopping.is_set():
            await asyncio.sleep(5.0)
            c = self.counters
            moving = sum(1 for r in self.responders.values() if r.working)
            with contextlib.suppress(httpx.HTTPError):
                queue = [i for i in await self.open_incidents() if self.ours(i)]
                breached = sum(
                    1 for i in queue for m in i["milestones"] if m["state"] == "breached"
                )
                self.log(
                    f"reports {c['reports']} | open incidents {len(queue)} "
                    f"({breached} breaches) | offers {c['offers']}: accepted {c['accepted']}, "
                    f"declined {c['declined']}, ignored {c['ignored']} | working {moving} | "
                    f"on scene {c['on_scene']}, cleared {c['cleared']} | resolved {c['resolved']}"
                )

    def incident_ids(self) -> set[str]:
        """Incidents the simulator has seen offers for."""
        return {o.incident_id for o in self.offers.values()}

    # --- the run

    async def run(self) -> SimResult:
        """Set up, simulate, drain, check and report."""
        try:
            await self.setup()
            for job in (self.pinger, self.patrol, self.dispatcher, self.console):
                self.tasks.append(asyncio.create_task(job(), name=job.__name__))
            self.started_reports = time.time()
            self.log(
                f"reports at {self.cfg.reports_per_s:g}/s for {self.cfg.duration_s:g}s "
                f"(time scale {self.cfg.time_scale:g})"
            )
            await self.citizens_report()
            self.log(f"no more reports; waiting for deadlines (≤ {self.cfg.drain_timeout_s:g}s)")
            waited = await self.drain()
            self.stopping.set()
            incidents = await self.collect()
            checks = await self.check(incidents, waited)
            if self.cfg.cleanup:
                await self.clean_up(incidents)
            table = compliance_table(incidents.values())
            return SimResult(
                self.reports, list(self.offers.values()), incidents, checks, self.counters, table
            )
        finally:
            self.stopping.set()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.http.aclose()
            for client in self.citizens:
                await client.aclose()

    async def drain(self) -> bool:
        """Wait until every milestone of this run is settled; whether that happened."""
        deadline = time.time() + self.cfg.drain_timeout_s
        # Reports still in flight must have reached dispatch before the queue can tell.
        await asyncio.sleep(2.0)
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                queue = [i for i in await self.open_incidents() if self.ours(i)]
                if not any(m["state"] == "pending" for i in queue for m in i["milestones"]):
                    return True
            await asyncio.sleep(1.0)
        return False

    async def collect(self) -> dict[str, dict[str, Any]]:
        """Every incident of this run, in full."""
        answer = await self.http.get(f"{self.ep.dispatch}/v1/incidents", headers=self.desk())
        answer.raise_for_status()
        ids = {str(i["incident_id"]) for i in answer.json() if self.ours(i)} | self.incident_ids()
        details = await asyncio.gather(*(self.incident(i) for i in sorted(ids)))
        return {str(d["incident_id"]): d for d in details}

    async def check(self, incidents: Mapping[str, Mapping[str, Any]], waited: bool) -> Checks:
        """Run the four correctness checks."""
        checks = Checks(waited_past_last_deadline=waited)
        checks.offers_checked = len(self.offers)
        checks.nearest_violations = nearest_violations(
            offers=list(self.offers.values()),
            responders=self.responders,
            plans=self.plans,
            window_s=self.cfg.ping_interval_s + self.cfg.ingest_lag_s,
            lag_s=self.cfg.ingest_lag_s,
        )
        checks.double_bookings = double_bookings(incidents.values()) + overlapping_offers(
            list(self.offers.values())
        )
        checks.reports_checked = len(self.reports)
        checks.lost_reports = await self.lost_reports(incidents)
        checks.incidents_checked = len(incidents)
        now = time.time()
        for incident_id, incident in incidents.items():
            if incident["status"] == "merged":
                continue
            for m in incident["milestones"]:
                if m["state"] != "pending":
                    continue
                if waited or parse_time(m["due_at"]) + DEADLINE_GRACE_S < now:
                    checks.unresolved_milestones.append(
                        f"incident {incident_id} ({incident['category']}): {m['stage']} "
                        f"still pending, due {m['due_at']}"
                    )
                else:
                    checks.not_yet_due += 1
        return checks

    async def lost_reports(self, incidents: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Reports that no incident holds, or whose reporter never saw them dispatched."""
        holders: dict[str, list[str]] = defaultdict(list)
        for incident_id, incident in incidents.items():
            for report in incident["reports"]:
                holders[str(report["report_id"])].append(incident_id)
        lost = []
        for report in self.reports:
            answer = await self.http.get(
                f"{self.ep.intake}/v1/reports/{report.report_id}",
                headers={"authorization": f"Bearer {report.tracking_token}"},
            )
            status = answer.json().get("status") if answer.status_code == 200 else None
            if status in (None, "received"):
                lost.append(f"report {report.report_id}: reporter sees {status or answer.text}")
            if len(holders[report.report_id]) != 1:
                lost.append(
                    f"report {report.report_id}: in incidents {holders[report.report_id] or '[]'}"
                )
        return lost

    async def clean_up(self, incidents: Mapping[str, Mapping[str, Any]]) -> None:
        """End of shift: resolve what is still open, and everyone goes off duty."""
        for incident_id, incident in incidents.items():
            if incident["status"] == "open":
                with contextlib.suppress(httpx.HTTPError):
                    await self.http.post(
                        f"{self.ep.dispatch}/v1/incidents/{incident_id}/resolve",
                        headers=self.desk(),
                    )
        for r in self.responders.values():
            with contextlib.suppress(httpx.HTTPError):
                await self.http.put(
                    f"{self.ep.locator}/v1/responders/{r.responder_id}/duty",
                    headers={"authorization": f"Bearer {r.token}"},
                    json={"on_duty": False},
                )


# --- the checks ---------------------------------------------------------------------


def nearest_violations(
    *,
    offers: Sequence[OfferSeen],
    responders: Mapping[str, SimResponder],
    plans: Mapping[str, ResponsePlan],
    window_s: float,
    lag_s: float,
) -> list[str]:
    """Offers for which a clearly better eligible free responder existed at claim time."""
    holds: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    tried: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for o in offers:
        holds[o.responder_id].append((o.claimed_at, o.released_at, o.incident_id))
        tried[o.incident_id].append((o.claimed_at, o.responder_id))

    def free_at(responder_id: str, t: float) -> bool:
        return not any(
            start - CLAIM_SLACK_S - lag_s <= t <= end + lag_s + CLAIM_SLACK_S
            for start, end, _ in holds[responder_id]
        )

    def eta_bounds(r: SimResponder, origin: tuple[float, float], t: float) -> tuple[float, float]:
        (lat, lon), odo = r.position_at(t)
        _, odo_before = r.position_at(t - window_s - CLAIM_SLACK_S)
        eta = distance_m((lat, lon), origin) / r.speed_mps
        spread = (odo - odo_before) / r.speed_mps + GEO_ROUNDING_S
        return eta - spread, eta + spread

    violations = []
    for o in offers:
        offered = responders.get(o.responder_id)
        if offered is None:
            violations.append(f"offer {o.offer_id} went to an unknown responder {o.responder_id}")
            continue
        plan = plan_for(plans, o.category)
        fits = [
            s for s in plan.slots if offered.kind in s.kinds and set(s.skills) <= offered.skills
        ]
        if not fits:
            violations.append(
                f"offer {o.offer_id} ({o.category}) went to an ineligible {offered.kind}"
            )
            continue
        asked = {rid for t, rid in tried[o.incident_id] if t < o.claimed_at}
        offered_low, _ = eta_bounds(offered, o.location, o.claimed_at)
        worst: str | None = None
        for slot in fits:
            rivals = []
            for c in responders.values():
                if (
                    c.responder_id == o.responder_id
                    or c.responder_id in asked
                    or c.kind not in slot.kinds
                    or not set(slot.skills) <= c.skills
                    or c.on_duty_at > o.claimed_at - lag_s
                    or not free_at(c.responder_id, o.claimed_at)
                ):
                    continue
                _, high = eta_bounds(c, o.location, o.claimed_at)
                if high < offered_low:
                    rivals.append((high, c))
            if not rivals:
                worst = None
                break
            high, best = min(rivals, key=lambda x: x[0])
            worst = (
                f"offer {o.offer_id} ({o.category}) to {offered.kind}/{offered.travel_mode} "
                f"(ETA ≥ {offered_low:.0f}s) but free {best.kind}/{best.travel_mode} "
                f"{best.responder_id} had ETA ≤ {high:.0f}s"
            )
        if worst:
            violations.append(worst)
    return violations


def overlapping_offers(offers: Sequence[OfferSeen]) -> list[str]:
    """Offers claimed for a responder before the app had even asked to end the last hold."""
    by_responder: dict[str, list[OfferSeen]] = defaultdict(list)
    for o in offers:
        by_responder[o.responder_id].append(o)
    found = []
    for responder_id, items in by_responder.items():
        items.sort(key=lambda o: o.claimed_at)
        for before, after in itertools.pairwise(items):
            if after.claimed_at < before.release_requested_at:
                found.append(
                    f"responder {responder_id} was offered {after.incident_id} while holding "
                    f"{before.incident_id} (seen on their stream)"
                )
    return found


def double_bookings(incidents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Overlapping holds of one responder on different incidents, from dispatch's records."""
    now = time.time()
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for incident in incidents:
        closed = parse_time(incident["closed_at"]) if incident.get("closed_at") else now
        incident_id = str(incident["incident_id"])
        for offer in incident["offers"]:
            if offer["status"] == "accepted":
                continue  # the unit's span covers it
            end = offer["answered_at"] or offer["expires_at"]
            spans[str(offer["responder_id"])].append(
                (parse_time(offer["offered_at"]), min(parse_time(end), closed), incident_id)
            )
        for unit in incident["units"]:
            start = parse_time(unit["assigned_at"])
            accepted = [
                parse_time(o["offered_at"])
                for o in incident["offers"]
                if o["status"] == "accepted" and o["responder_id"] == unit["responder_id"]
            ]
            end = parse_time(unit["cleared_at"]) if unit["cleared_at"] else closed
            spans[str(unit["responder_id"])].append((min([start, *accepted]), end, incident_id))
    found = []
    for responder_id, items in spans.items():
        items.sort()
        held_until, held = -math.inf, ""
        for start, end, incident_id in items:
            if incident_id != held and start < held_until:
                found.append(
                    f"responder {responder_id} held {held} until {held_until:.3f} "
                    f"and {incident_id} from {start:.3f}"
                )
            if end > held_until:
                held_until, held = end, incident_id
    return found


# --- the table ------------------------------------------------------------------------


def compliance_table(incidents: Iterable[Mapping[str, Any]]) -> str:
    """Targets met and breached by stage and category, with the median seconds when met."""
    cells: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    stages: list[str] = []
    for incident in incidents:
        if incident["status"] == "merged":
            continue
        for m in incident["milestones"]:
            if m["stage"] not in stages:
                stages.append(m["stage"])
            cells[(incident["category"], m["stage"])].append(m)
            cells[("all", m["stage"])].append(m)
    categories = [*sorted({c for c, _ in cells if c != "all"}), "all"]

    def cell(ms: list[Mapping[str, Any]]) -> str:
        if not ms:
            return "-"
        met = [m for m in ms if m["state"] == "met"]
        breached = sum(1 for m in ms if m["state"] == "breached")
        pending = len(ms) - len(met) - breached
        text = f"{len(met)}/{len(ms)} met"
        if met:
            text += f", {statistics.median(m['seconds'] for m in met):.0f}s"
        if pending:
            text += f" ({pending} pending)"
        return text

    width = 26
    lines = [
        "1-3-5 compliance by stage and category (met/total, median seconds when met)",
        f"{'category':<16}" + "".join(f"{s:<{width}}" for s in stages),
    ]
    for category in categories:
        row = "".join(f"{cell(cells[(category, s)]):<{width}}" for s in stages)
        lines.append(f"{category:<16}{row}")
    return "\n".join(lines)


def report_text(result: SimResult) -> str:
    """The end-of-run summary: the table and the checks."""
    c, k = result.checks, result.counters
    outcome = Counter(o.outcome for o in result.offers)
    lines = [
        "",
        result.table,
        "",
        f"reports {len(result.reports)}, incidents {len(result.incidents)}, "
        f"offers {len(result.offers)} ({', '.join(f'{n} {o}' for o, n in outcome.items())}), "
        f"pings {k['pings']}",
        "Correctness:",
        f"  nearest eligible free responder  {len(c.nearest_violations)} violations "
        f"in {c.offers_checked} offers",
        f"  double bookings                  {len(c.double_bookings)}",
        f"  lost reports                     {len(c.lost_reports)} of {c.reports_checked}",
        f"  unresolved milestones            {len(c.unresolved_milestones)}"
        + ("" if c.waited_past_last_deadline else f" ({c.not_yet_due} pending, not yet due)"),
    ]
    for problem in (
        c.nearest_violations + c.double_bookings + c.lost_reports + c.unresolved_milestones
    )[:20]:
        lines.append(f"    {problem}")
    lines.append("ALL CHECKS PASSED" if c.passed else "CHECKS FAILED")
    return "\n".join(lines)


async def simulate(endpoints: Endpoints, config: SimConfig) -> SimResult:
    """Run one simulation against a stack."""
    return await Simulation(endpoints, config).run()


# --- the CLI --------------------------------------------------------------------------


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
        offer_timeout_s=args.offer_timeout or 30.0 / (scale if embedded else 1.0),
        plans_path=args.plans,
        seed=args.seed,
        cleanup=not args.no_cleanup,
    )
    if embedded:
        return run_embedded(config)
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


def finish(result: SimResult) -> int:
    """Print the summary; the exit code says whether the checks passed."""
    print(report_text(result), flush=True)
    return 0 if result.checks.passed else 1


def run_embedded(config: SimConfig) -> int:
    """Start an own stack on free ports with scaled targets, simulate, stop it."""
    from tools.devstack import Stack  # only needed here; it pulls in the broker tooling

    run_dir = Path(tempfile.mkdtemp(prefix="qrd-sim-"))
    stack = Stack.on_free_ports(
        run_dir, service_env={"dispatch": scaled_dispatch_env(config.time_scale)}
    )
    print(
        f"Starting an own stack on free ports (time scale {config.time_scale:g}: targets "
        f"{scaled_dispatch_env(config.time_scale)['TARGET_OVERRIDES_S']}, logs in {run_dir}) …",
        flush=True,
    )
    try:
        stack.start(timeout=120)
        print(f"Console: {stack.url('dispatch')}/console", flush=True)
        result = asyncio.run(simulate(embedded_endpoints(stack), config))
    finally:
        stack.stop()
    return finish(result)


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


if __name__ == "__main__":
    raise SystemExit(main())
