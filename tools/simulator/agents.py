"""The people of the town: responders, citizens and a dispatcher, each playing their app.

- Responders of each kind register (as a dispatcher would), go on duty, patrol and
  stream their positions through ``POST /v1/locations/batch`` (a gateway's service
  token), listen on their notification stream, accept offers with a set probability
  (else decline, or ignore them until they expire), travel to the incident at their
  travel mode's speed and report en route, on scene, cleared.
- Citizens post reports as a Poisson process with a category mix, at random points
  of the town.
- A dispatcher resolves an incident once its units have cleared and none of its
  1-3-5 milestones is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from tools.simulator.checks import run_checks
from tools.simulator.model import (
    Endpoints,
    OfferSeen,
    PostedReport,
    SimConfig,
    SimResponder,
    SimResult,
)
from tools.simulator.report import compliance_table
from tools.simulator.rules import KINDS, load_plans, speed_mps
from tools.simulator.town import Town, distance_m, step_toward
from tools.simulator.wire import citizen_addresses, parse_time, sse_messages

# Travel modes (with weights) and the share with first aid, by kind.
FLEET: dict[str, tuple[dict[str, float], float]] = {
    "patrol": ({"car": 0.6, "motorbike": 0.4}, 0.5),
    "auxiliary": ({"motorbike": 0.5, "bicycle": 0.5}, 0.4),
    "volunteer": ({"foot": 0.6, "bicycle": 0.4}, 0.4),
}
TICK_S = 0.2
COVERAGE_STAGE = "T3"
COVERAGE_POLL_S = 2.0  # real seconds; dispatch recomputes the map every COVERAGE_INTERVAL_S
ARRIVED_M = 15.0


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
        self.coverage: list[tuple[float, float]] = []
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
            speed_mps=speed_mps(mode),
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
                        elif message.get("type") == "offer_withdrawn":
                            self.on_offer_withdrawn(r, message)
                        elif message.get("type") == "incident_closed":
                            self.on_incident_closed(r, message)
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

    def on_offer_withdrawn(self, r: SimResponder, message: dict[str, Any]) -> None:
        """The offer was taken off the screen (withdrawn, or lapsed): the hold ended when
        the system ended it."""
        offer = self.offers.get(str(message.get("offer_id")))
        if offer is None or offer.outcome == "accepted":
            return
        ended = parse_time(message["occurred_at"])
        offer.release_requested_at = min(offer.release_requested_at, ended)
        offer.released_at = min(offer.released_at, ended)
        self.release(r, offer)

    def on_incident_closed(self, r: SimResponder, message: dict[str, Any]) -> None:
        """A dispatcher closed the incident the responder holds: the unit is stood down
        when the system closed it (the trip there stops)."""
        held = self.offers.get(r.holding) if r.holding else None
        if held is None or held.incident_id != str(message.get("incident_id")):
            return
        ended = parse_time(message["occurred_at"])
        held.release_requested_at = min(held.release_requested_at, ended)
        held.released_at = min(held.released_at, ended)
        self.release(r, held)

    async def answer(self, r: SimResponder, offer: OfferSeen, choice: str) -> None:
        """Think, then accept (and go), decline, or let the offer lapse."""
        headers = {"authorization": f"Bearer {r.token}"}
        base = f"{self.ep.dispatch}/v1/offers/{offer.offer_id}"
        if choice == "ignore":
            offer.outcome = "ignored"
            self.counters["ignored"] += 1
            # The offer lapses on the system's clock; the hold ends then.
            offer.release_requested_at = min(offer.release_requested_at, offer.expires_at)
            offer.released_at = min(offer.released_at, offer.expires_at + self.cfg.ingest_lag_s)
            await asyncio.sleep(max(0.0, offer.released_at - time.time()))
            self.release(r, offer)
            return
        if offer.outcome == "pending":
            await asyncio.sleep(self.sim_s(self.rng.uniform(*self.cfg.think_sim_s)))
        if choice == "decline":
            offer.release_requested_at = min(
                offer.release_requested_at, time.time(), offer.expires_at
            )
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
            offer.release_requested_at = min(
                offer.release_requested_at, time.time(), offer.expires_at
            )
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
            offer.released_at = min(offer.released_at, time.time())
            if r.holding in (None, offer.offer_id):
                r.working = False  # unless a newer job is under way
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
            if self.stopping.is_set() or offer.release_requested_at < math.inf:
                return  # the run ended, or the incident was closed meanwhile
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

    async def coverage_watch(self) -> None:
        """Sample the live coverage map's T3 ratio, as a desk watching the layer would."""
        while not self.stopping.is_set():
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                answer = await self.http.get(
                    f"{self.ep.dispatch}/v1/coverage",
                    params={"stage": COVERAGE_STAGE},
                    headers=self.desk(),
                )
                if answer.status_code == 200:
                    ratio = float(answer.json()["covered_ratio"])
                    self.coverage.append((time.time() - self.started, ratio))
            await asyncio.sleep(COVERAGE_POLL_S)

    def incident_ids(self) -> set[str]:
        """Incidents the simulator has seen offers for."""
        return {o.incident_id for o in self.offers.values()}

    # --- the run

    async def run(self) -> SimResult:
        """Set up, simulate, drain, check and report."""
        try:
            await self.setup()
            jobs = (self.pinger, self.patrol, self.dispatcher, self.console, self.coverage_watch)
            for job in jobs:
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
            checks = await run_checks(
                http=self.http,
                intake_url=self.ep.intake,
                reports=self.reports,
                offers=list(self.offers.values()),
                responders=self.responders,
                plans=self.plans,
                incidents=incidents,
                window_s=self.cfg.ping_interval_s + self.cfg.ingest_lag_s,
                lag_s=self.cfg.ingest_lag_s,
                waited=waited,
            )
            if self.cfg.cleanup:
                await self.clean_up(incidents)
            table = compliance_table(incidents.values())
            return SimResult(
                self.reports,
                list(self.offers.values()),
                incidents,
                checks,
                self.counters,
                table,
                coverage=self.coverage,
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


async def simulate(endpoints: Endpoints, config: SimConfig) -> SimResult:
    """Run one simulation against a stack."""
    return await Simulation(endpoints, config).run()
