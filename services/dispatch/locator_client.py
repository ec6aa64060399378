"""The volunteer-locator's claim API behind a small interface (docs/internal-api.md)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast, runtime_checkable

import aiohttp
import orjson
from pydantic import ValidationError

from services.dispatch.domain import distance_m
from shared.auth import LOCATOR, Role, mint_token
from shared.claims import MAX_GEO_LAT, ClaimGranted, ClaimRequest, ReleaseRequest
from shared.responders import DEFAULT_SPEEDS_KMH, KINDS, ResponderKind


@dataclass(frozen=True)
class Candidate:
    """A responder the locator has claimed (status ``offered``) for an incident."""

    responder_id: uuid.UUID
    kind: str
    travel_mode: str
    distance_m: float
    eta_s: float
    trace: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NearbyResponder:
    """A free, eligible responder and how long they would take (nothing is claimed)."""

    responder_id: uuid.UUID
    kind: str
    distance_m: float
    eta_s: float
    status: str


@dataclass(frozen=True)
class ResponderPosition:
    """An on-duty responder where the locator last saw them, for the console's map."""

    responder_id: uuid.UUID
    kind: str
    status: str | None
    lat: float | None
    lon: float | None
    last_seen_at: datetime | None


class LocatorUnavailable(RuntimeError):
    """The locator could not be asked (down, slow or erroring); try again later."""


class SearchImpossible(RuntimeError):
    """The search itself can never succeed (the locator refused it as invalid, or the plan
    names no kind of responder that exists): flag the incident now, retrying cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_searchable(*, lat: float, lon: float, kinds: Sequence[str]) -> None:
    """Raise :class:`SearchImpossible` for a search no responder could ever answer."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > MAX_GEO_LAT or abs(lon) > 180:
        raise SearchImpossible("location_unsearchable")
    if not known_kinds(kinds):
        raise SearchImpossible("plan_unfillable")


def known_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds in ``kinds`` that responders can actually be."""
    return [k for k in kinds if k in KINDS]


class ResponderUnavailable(RuntimeError):
    """The named responder is not free."""


class Locator(Protocol):
    """Claims and releases responders atomically, so nobody is booked twice."""

    async def claim(
        self,
        *,
        incident_id: uuid.UUID,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        exclude: Sequence[uuid.UUID],
        responder_id: uuid.UUID | None = None,
        hold_s: float,
    ) -> Candidate | None:
        """Claim the nearest eligible responder (or the named one); None if nobody is free.

        Raises :class:`ResponderUnavailable` when a named responder is not free and
        :class:`LocatorUnavailable` when the locator cannot answer.
        """
        ...

    async def release(self, *, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
        """Return a responder held for ``incident_id`` to free."""
        ...


@runtime_checkable
class ResponderDirectory(Protocol):
    """Read-only questions the console asks the locator; nothing is claimed."""

    async def nearest(
        self,
        *,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        limit: int,
    ) -> list[NearbyResponder]:
        """The free eligible responders with the smallest ETA, best first."""
        ...

    async def on_duty(self, *, bearer: str | None = None) -> list[ResponderPosition]:
        """Every on-duty responder with their last known position.

        ``bearer`` asks as that caller (the locator lists responders to dispatchers and
        operators); without it, dispatch asks with its service token.
        """
        ...


KEEPALIVE_S = 4.0


@dataclass(frozen=True)
class _Answer:
    """A locator's answer: its status and body."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class HttpLocator:
    """Calls ``POST {LOCATOR_URL}/v1/claims`` (and the console's read-only look-ups)
    with a service token.

    On aiohttp rather than httpx: a claim is on every report's path, and aiohttp's
    C parser costs about a sixth of the CPU per request of httpx's pure-Python h11."""

    def __init__(self, *, base_url: str, secret: str, timeout_s: float, trace: bool = True) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._trace = trace
        self._secret = secret
        self._token = ""
        self._token_until = 0.0

    def _auth(self) -> dict[str, str]:
        # Minting is cheap, but there is no need to do it on every claim.
        if time.monotonic() > self._token_until:
            self._token = mint_token(
                secret=self._secret,
                role=Role.SERVICE,
                subject="dispatch",
                ttl=timedelta(hours=1),
                audience=(LOCATOR,),
            )
            self._token_until = time.monotonic() + 1800
        return {"authorization": f"Bearer {self._token}"}

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            # Idle connections are dropped before uvicorn's 5 s keep-alive closes them, so
            # a claim never goes out on a connection the locator is closing.
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: dict[str, object] | None = None,
        params: dict[str, Any] | None = None,
    ) -> _Answer:
        if body is not None:
            headers = {**headers, "content-type": "application/json"}
        try:
            async with self._client().request(
                method,
                self._base_url + path,
                data=None if body is None else orjson.dumps(body),
                params=params,
                headers=headers,
            ) as response:
                return _Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LocatorUnavailable(f"locator unreachable: {exc!r}") from exc

    async def _post(self, path: str, body: dict[str, object]) -> _Answer:
        return await self._request("POST", path, headers=self._auth(), body=body)

    async def _get_json(
        self, path: str, params: dict[str, Any], *, bearer: str | None = None
    ) -> Any:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else self._auth()
        answer = await self._request("GET", path, headers=headers, params=params)
        if answer.status_code != 200:
            raise LocatorUnavailable(f"{path} answered {answer.status_code}: {answer.text[:200]}")
        return orjson.loads(answer.content)

    async def nearest(
        self,
        *,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        limit: int,
    ) -> list[NearbyResponder]:
        """Ask ``GET /v1/responders/nearest`` (ranked by ETA)."""
        params: dict[str, Any] = {"lat": lat, "lon": lon, "limit": limit}
        if kinds:
            params["kinds"] = ",".join(kinds)
        if skills:
            params["skills"] = ",".join(skills)
        body = await self._get_json("/v1/responders/nearest", params)
        return [
            NearbyResponder(
                responder_id=uuid.UUID(str(r["responder_id"])),
                kind=str(r["kind"]),
                distance_m=float(r["distance_m"]),
                eta_s=float(r["eta_s"]),
                status=str(r["status"]),
            )
            for r in body
        ]

    async def on_duty(self, *, bearer: str | None = None) -> list[ResponderPosition]:
        """Ask ``GET /v1/responders?on_duty=true``."""
        body = await self._get_json("/v1/responders", {"on_duty": "true"}, bearer=bearer)
        return [
            ResponderPosition(
                responder_id=uuid.UUID(str(r["responder_id"])),
                kind=str(r["kind"]),
                status=None if r.get("status") is None else str(r["status"]),
                lat=None if r.get("lat") is None else float(r["lat"]),
                lon=None if r.get("lon") is None else float(r["lon"]),
                last_seen_at=(
                    None
                    if r.get("last_seen_at") is None
                    else datetime.fromisoformat(str(r["last_seen_at"]))
                ),
            )
            for r in body
        ]

    async def claim(
        self,
        *,
        incident_id: uuid.UUID,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        exclude: Sequence[uuid.UUID],
        responder_id: uuid.UUID | None = None,
        hold_s: float,
    ) -> Candidate | None:
        """Claim through the locator."""
        if responder_id is None:
            check_searchable(lat=lat, lon=lon, kinds=kinds)
        # Built unvalidated: the locator validates the request, and answers 422 for a bad one.
        request = ClaimRequest.model_construct(
            incident_id=incident_id,
            lat=lat,
            lon=lon,
            kinds=cast(list[ResponderKind], list(kinds)),
            skills=list(skills),
            exclude=list(exclude),
            responder_id=responder_id,
            hold_s=math.ceil(hold_s),
            trace=self._trace and responder_id is None,
        )
        answer = await self._post("/v1/claims", request.model_dump(mode="json"))
        if answer.status_code == 404:
            return None
        if answer.status_code == 409:
            raise ResponderUnavailable("the responder is not free")
        if answer.status_code in (400, 422):
            # The locator found the search itself invalid; the same search will fail again.
            raise SearchImpossible("locator_refused_search")
        if answer.status_code != 200:
            raise LocatorUnavailable(f"claim answered {answer.status_code}: {answer.text[:200]}")
        try:
            granted = ClaimGranted.model_validate_json(answer.content)
        except ValidationError as exc:
            raise LocatorUnavailable(f"claim answer unreadable: {exc}") from exc
        return Candidate(
            responder_id=granted.responder_id,
            kind=granted.kind,
            travel_mode=granted.travel_mode,
            distance_m=granted.distance_m,
            eta_s=granted.eta_s,
            trace=granted.trace.model_dump(mode="json") if granted.trace else None,
        )

    async def release(self, *, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
        """Release through the locator; the locator's hold timer is the fallback if this fails."""
        request = ReleaseRequest(responder_id=responder_id, incident_id=incident_id)
        answer = await self._post("/v1/claims/release", request.model_dump(mode="json"))
        if answer.status_code >= 500:
            raise LocatorUnavailable(f"release answered {answer.status_code}")

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()


@dataclass
class MemoryResponder:
    """A responder in the in-memory locator."""

    responder_id: uuid.UUID
    kind: str
    lat: float
    lon: float
    skills: tuple[str, ...] = ()
    travel_mode: str = "foot"
    on_duty: bool = True
    status: str = "free"
    held_for: uuid.UUID | None = None


@dataclass
class MemoryLocator:
    """An in-memory locator for unit tests, with the same claim rules as the real one."""

    responders: dict[uuid.UUID, MemoryResponder] = field(default_factory=dict)
    down: bool = False
    claims: list[uuid.UUID] = field(default_factory=list)

    def add(
        self,
        kind: str,
        lat: float,
        lon: float,
        *,
        skills: tuple[str, ...] = (),
        travel_mode: str = "foot",
    ) -> uuid.UUID:
        """Put a free, on-duty responder on the map."""
        rid = uuid.uuid4()
        self.responders[rid] = MemoryResponder(rid, kind, lat, lon, skills, travel_mode)
        return rid

    def set_availability(
        self, responder_id: uuid.UUID, status: str, incident_id: uuid.UUID
    ) -> None:
        """Apply an AvailabilityChanged as the locator does: free only if held for that incident."""
        r = self.responders[responder_id]
        if status == "busy":
            r.status, r.held_for = "busy", incident_id
        elif status == "free" and r.held_for == incident_id:
            r.status, r.held_for = "free", None

    def _eta_s(self, r: MemoryResponder, lat: float, lon: float) -> tuple[float, float]:
        d = distance_m(lat, lon, r.lat, r.lon)
        return d, d / (DEFAULT_SPEEDS_KMH[r.travel_mode] / 3.6)

    async def claim(
        self,
        *,
        incident_id: uuid.UUID,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        exclude: Sequence[uuid.UUID],
        responder_id: uuid.UUID | None = None,
        hold_s: float,
    ) -> Candidate | None:
        """Claim the free responder with the smallest ETA."""
        del hold_s
        if self.down:
            raise LocatorUnavailable("the fake locator is down")
        if responder_id is None:
            check_searchable(lat=lat, lon=lon, kinds=kinds)
        if responder_id is not None:
            named = self.responders.get(responder_id)
            if named is None or named.status != "free" or not named.on_duty:
                raise ResponderUnavailable("not free")
            pool = [named]
        else:
            pool = [
                r
                for r in self.responders.values()
                if r.status == "free"
                and r.on_duty
                and r.kind in kinds
                and set(skills) <= set(r.skills)
                and r.responder_id not in exclude
            ]
        if not pool:
            return None
        best = min(pool, key=lambda r: self._eta_s(r, lat, lon)[1])
        d, eta = self._eta_s(best, lat, lon)
        trace = None
        if responder_id is None:
            trace = self._trace(best, pool, lat, lon, kinds, skills, exclude)
        best.status, best.held_for = "offered", incident_id
        self.claims.append(best.responder_id)
        return Candidate(best.responder_id, best.kind, best.travel_mode, d, eta, trace)

    def _trace(
        self,
        best: MemoryResponder,
        pool: Sequence[MemoryResponder],
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        exclude: Sequence[uuid.UUID],
    ) -> dict[str, Any]:
        """The trace the real locator answers with, by the same reasons (no staleness here)."""
        d_best, eta_best = self._eta_s(best, lat, lon)
        ranked = sorted(pool, key=lambda r: self._eta_s(r, lat, lon)[1])[:5]
        candidates = [
            {
                "responder_id": str(r.responder_id),
                "kind": r.kind,
                "travel_mode": r.travel_mode,
                "skills": list(r.skills),
                "distance_m": round(self._eta_s(r, lat, lon)[0], 1),
                "eta_s": round(self._eta_s(r, lat, lon)[1], 1),
                "outcome": "claimed" if r is best else "ranked_lower",
                "reason": None,
            }
            for r in ranked
        ]
        passed: list[dict[str, Any]] = []
        for r in self.responders.values():
            d, eta = self._eta_s(r, lat, lon)
            if r in ranked or (d >= d_best and eta >= eta_best):
                continue
            if not r.on_duty:
                reason = "off_duty"
            elif r.responder_id in exclude:
                reason = "excluded"
            elif r.status != "free":
                reason = "busy"
            elif r.kind not in kinds:
                reason = "wrong_kind"
            elif not set(skills) <= set(r.skills):
                reason = "wrong_skill"
            else:
                reason = "slower_eta"
            passed.append(
                {
                    "responder_id": str(r.responder_id),
                    "kind": r.kind,
                    "travel_mode": r.travel_mode,
                    "distance_m": round(d, 1),
                    "eta_s": round(eta, 1),
                    "reason": reason,
                }
            )
        passed.sort(key=lambda p: p["distance_m"])
        return {
            "radius_m": 500.0,
            "radius_step": 1,
            "candidates": candidates,
            "passed_over": passed,
        }

    async def release(self, *, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
        """Free the responder if still held for the incident."""
        self.set_availability(responder_id, "free", incident_id)

    async def nearest(
        self,
        *,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        limit: int,
    ) -> list[NearbyResponder]:
        """The free eligible responders by ETA, without claiming anyone."""
        if self.down:
            raise LocatorUnavailable("the fake locator is down")
        pool = [
            r
            for r in self.responders.values()
            if r.status == "free"
            and r.on_duty
            and (not kinds or r.kind in kinds)
            and set(skills) <= set(r.skills)
        ]
        ranked = sorted(((self._eta_s(r, lat, lon), r) for r in pool), key=lambda x: x[0][1])
        return [
            NearbyResponder(r.responder_id, r.kind, d, eta, r.status)
            for (d, eta), r in ranked[:limit]
        ]

    async def on_duty(self, *, bearer: str | None = None) -> list[ResponderPosition]:
        """Every on-duty responder where they are."""
        del bearer
        if self.down:
            raise LocatorUnavailable("the fake locator is down")
        return [
            ResponderPosition(r.responder_id, r.kind, r.status, r.lat, r.lon, None)
            for r in self.responders.values()
            if r.on_duty
        ]
