"""The geo index in Redis, behind one Lua script (``index.lua``) so every change is atomic.

Keys, all under the prefix (default ``locator:``):

- ``geo:<kind>:<travel_mode>``: GEO set of the searchable responders of that kind and
  travel mode (on duty, free, placed). Splitting by mode keeps each key in ETA order for
  a straight-line provider, so a search needs only the nearest few of each key;
- ``seen``: sorted set, responder id -> time of the newest ping (epoch seconds);
- ``status``: hash, responder id -> ``free`` | ``offered`` | ``busy``;
- ``holder``: hash, responder id -> the incident an offer or booking is held for;
- ``holds``: sorted set, responder id -> when an unconfirmed claim (or a booking dispatch
  no longer lists) lapses;
- ``r:<id>``: hash of the responder's cached attributes and newest position;
- ``placed``: GEO set of every responder's newest position, whatever their state (the
  decision trace finds there the closer responders a claim passed over).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from services.volunteer_locator.eta import GroupHits, GroupQuery
from services.volunteer_locator.geo import Candidate, Point
from services.volunteer_locator.trace import Seen, parse_seen
from shared.responders import KINDS

TRAVEL_MODES: tuple[str, ...] = ("foot", "bicycle", "motorbike", "car")
# Before the split by travel mode there was one GEO key per kind.


def groups_of(kinds: Collection[str]) -> list[tuple[str, str]]:
    """The (kind, travel mode) groups, one GEO key each, that hold responders of ``kinds``."""
    return [(kind, mode) for kind in kinds for mode in TRAVEL_MODES]


SEARCHABLE_CHUNK = 500  # responders per round trip when listing everyone searchable


@dataclass(frozen=True, slots=True)
class PingRow:
    """One position to index."""

    responder_id: str
    lat: float
    lon: float
    recorded_at: float


@dataclass(frozen=True, slots=True)
class AttributesRow:
    """What the index caches about a responder, with the time its duty state was set."""

    responder_id: str
    kind: str
    skills: Sequence[str]
    travel_mode: str
    on_duty: bool
    duty_ts: float


@dataclass(frozen=True, slots=True)
class Claimed:
    """The responder a claim booked."""

    responder_id: str
    kind: str
    travel_mode: str
    position: Point


@dataclass(frozen=True, slots=True)
class TracedClaim:
    """A claim's booking (or None) with what it saw: the candidates as they stood before
    booking, and the other placed responders within the booked one's trace radius."""

    booked: Claimed | None
    candidates: list[Seen]
    others: list[Seen]


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the index knows about one responder now."""

    status: str | None
    position: Point | None
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class SearchableRow:
    """A responder a search could return now: kind, travel mode, skills and position."""

    kind: str
    travel_mode: str
    skills: tuple[str, ...]
    lat: float
    lon: float


def encode_skills(skills: Collection[str]) -> str:
    """Skills as ``|a|b|`` so Lua can test membership with a plain substring search."""
    return "|" + "|".join(sorted(skills)) + "|"


def ts(when: datetime) -> float:
    """Epoch seconds."""
    return when.timestamp()


class GeoIndex:
    """The locator's Redis state."""

    def __init__(self, redis: Redis, *, prefix: str, stale_after_s: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._stale_after_s = stale_after_s
        self._script = redis.register_script(
            resources.files(__package__).joinpath("index.lua").read_text()
        )

    def key(self, name: str) -> str:
        """A key under this index's prefix."""
        return self._prefix + name

    def stale_cutoff(self, now: datetime) -> float:
        """Pings recorded before this are too old to make a responder searchable."""
        return ts(now) - self._stale_after_s

    async def _run(self, op: str, *args: Any) -> Any:
        return await self._script(args=[op, self._prefix, *args])

    async def upsert(self, rows: Sequence[AttributesRow]) -> None:
        """Cache responders' attributes and duty state (newer duty states win)."""
        args: list[Any] = []
        for r in rows:
            args += [
                r.responder_id,
                r.kind,
                encode_skills(r.skills),
                r.travel_mode,
                "1" if r.on_duty else "0",
                repr(r.duty_ts),
            ]
        if args:
            await self._run("upsert", *args)

    async def set_duty(self, *, responder_id: str, on_duty: bool, duty_ts: float) -> bool:
        """Apply a duty state unless a newer one is held; False if unknown or older."""
        result = await self._run("duty", responder_id, "1" if on_duty else "0", repr(duty_ts))
        return int(result) == 1

    async def ingest(self, pings: Sequence[PingRow], *, now: datetime) -> list[int]:
        """Index positions; per ping 1 = indexed, 0 = older than the held one, -1 = unknown."""
        if not pings:
            return []
        # One packed argument: redis-py packs each argument in Python, four per ping cost
        # more than the Lua script that indexes them (profiled: ~15 us per ping).
        packed = "\n".join(f"{p.responder_id} {p.lat!r} {p.lon!r} {p.recorded_at!r}" for p in pings)
        return [int(x) for x in await self._run("pings", repr(self.stale_cutoff(now)), packed)]

    def at(self, now: datetime) -> IndexAt:
        """This index as a ``GroupedSource`` whose freshness is judged at ``now``."""
        return IndexAt(self, now)

    def _filters(
        self, origin: Point, skills: Collection[str], exclude: Collection[str], now: datetime
    ) -> list[Any]:
        return [
            repr(origin.lon),
            repr(origin.lat),
            repr(self.stale_cutoff(now)),
            len(skills),
            *skills,
            len(exclude),
            *exclude,
        ]

    async def nearest_in_groups(
        self,
        *,
        origin: Point,
        queries: Sequence[GroupQuery],
        skills: Collection[str],
        exclude: Collection[str],
        now: datetime,
    ) -> list[GroupHits]:
        """Per query, its group's ``count`` nearest eligible responders within its radius."""
        args = self._filters(origin, skills, exclude, now)
        for q in queries:
            args += [q.kind, q.travel_mode, repr(q.radius_m), q.count]
        flat = await self._run("nearest", *args)
        out: list[GroupHits] = []
        i = 0
        while i < len(flat):
            kind, mode, more, n = flat[i], flat[i + 1], int(flat[i + 2]), int(flat[i + 3])
            i += 4
            out.append(
                GroupHits(
                    kind=kind,
                    travel_mode=mode,
                    candidates=[
                        Candidate(flat[j], kind, mode, float(flat[j + 1]))
                        for j in range(i, i + 2 * n, 2)
                    ],
                    more=more == 1,
                )
            )
            i += 2 * n
        return out

    async def claim(
        self,
        *,
        candidates: Sequence[str],
        incident_id: str,
        hold_until: datetime,
        fresh_after: float,
    ) -> Claimed | None:
        """Book the first candidate still free (and fresh after ``fresh_after``), atomically."""
        if not candidates:
            return None
        row = await self._run(
            "claim", incident_id, repr(ts(hold_until)), repr(fresh_after), *candidates
        )
        if not row:
            return None
        return Claimed(
            responder_id=row[0],
            kind=row[1],
            travel_mode=row[2],
            position=Point(lat=float(row[3]), lon=float(row[4])),
        )

    async def claim_traced(
        self,
        *,
        candidates: Sequence[tuple[str, float]],
        incident_id: str,
        hold_until: datetime,
        fresh_after: float,
        origin: Point,
        passed_max: int,
    ) -> TracedClaim:
        """:meth:`claim`, also describing the (id, trace radius) candidates and up to
        ``passed_max`` others within the booked candidate's trace radius, in one call."""
        args: list[Any] = [
            incident_id,
            repr(ts(hold_until)),
            repr(fresh_after),
            repr(origin.lon),
            repr(origin.lat),
            passed_max,
            len(candidates),
        ]
        for rid, radius_m in candidates:
            args += [rid, repr(radius_m)]
        flat = [x if isinstance(x, str) else str(x) for x in await self._run("claim_traced", *args)]
        booked = None
        if flat[0]:
            booked = Claimed(
                responder_id=flat[0],
                kind=flat[1],
                travel_mode=flat[2],
                position=Point(lat=float(flat[3]), lon=float(flat[4])),
            )
        seen, i = parse_seen(flat, 6, int(flat[5]))
        others, _ = parse_seen(flat, i + 1, int(flat[i]))
        return TracedClaim(booked=booked, candidates=seen, others=others)

    async def mark_revoked(self, *, responder_id: str) -> None:
        """Remember that the responder was revoked (cleared when they come on duty again)."""
        await self._run("revoked", responder_id)

    async def release(self, *, responder_id: str, incident_id: str) -> bool:
        """Free the responder if still held for ``incident_id``."""
        return int(await self._run("release", responder_id, incident_id)) == 1

    async def mark_busy(self, *, responder_id: str, incident_id: str) -> bool:
        """Dispatch booked the responder; False if the index does not know them."""
        return int(await self._run("busy", responder_id, incident_id)) == 1

    async def suspect(self, *, keep: Collection[str], deadline: datetime) -> int:
        """Give every busy responder not in ``keep`` a hold lapsing at ``deadline``."""
        return int(await self._run("suspect", repr(ts(deadline)), *keep))

    async def expire_holds(self, *, now: datetime, limit: int = 1000) -> int:
        """Free responders whose unconfirmed claim has lapsed; return how many."""
        return int(await self._run("expire", repr(ts(now)), limit))

    async def drop_stale(self, *, after: float, until: float) -> int:
        """Take responders whose last ping fell in ``(after, until]`` out of the GEO keys."""
        return int(await self._run("unstale", repr(after), repr(until)))

    async def available_by_kind(self) -> dict[str, int]:
        """How many responders each kind's GEO keys hold (searchable, give or take staleness)."""
        groups = groups_of(KINDS)
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, mode in groups:
                pipe.zcard(self.key(f"geo:{kind}:{mode}"))
            counts = await pipe.execute()
        out = dict.fromkeys(KINDS, 0)
        for (kind, _), n in zip(groups, counts, strict=True):
            out[kind] += int(n)
        return out

    async def searchable(self, *, now: datetime) -> list[SearchableRow]:
        """Every responder a search could return now: in a GEO key (on duty, free, placed)
        with a fresh ping, with their attributes and newest position."""
        groups = groups_of(KINDS)
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, mode in groups:
                pipe.zrange(self.key(f"geo:{kind}:{mode}"), 0, -1)
            members: list[list[str]] = await pipe.execute()
        ids = [rid for group in members for rid in group]
        rows: list[Any] = []
        # In chunks, each its own round trip: one pipeline of every responder would hold
        # the event loop (packing and parsing) long enough to stall the claims behind it.
        for start in range(0, len(ids), SEARCHABLE_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for rid in ids[start : start + SEARCHABLE_CHUNK]:
                    pipe.hmget(
                        self.key(f"r:{rid}"), ["kind", "travel_mode", "skills", "lat", "lon", "ts"]
                    )
                rows.extend(await pipe.execute())
        cutoff = self.stale_cutoff(now)
        out: list[SearchableRow] = []
        for kind, mode, skills, lat, lon, seen in rows:
            if not (kind and lat and lon and seen) or float(seen) < cutoff:
                continue
            out.append(
                SearchableRow(
                    kind=kind,
                    travel_mode=mode or "",
                    skills=tuple(s for s in (skills or "").split("|") if s),
                    lat=float(lat),
                    lon=float(lon),
                )
            )
        return out

    async def live_many(self, responder_ids: Sequence[str]) -> list[LiveState]:
        """:meth:`live` for many responders in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for rid in responder_ids:
                pipe.hget(self.key("status"), rid)
                pipe.hmget(self.key(f"r:{rid}"), ["lat", "lon", "ts"])
            replies = await pipe.execute()
        out: list[LiveState] = []
        for status, (lat, lon, seen) in zip(replies[::2], replies[1::2], strict=True):
            position = Point(lat=float(lat), lon=float(lon)) if lat and lon else None
            out.append(
                LiveState(status=status, position=position, last_seen=float(seen) if seen else None)
            )
        return out

    async def live(self, responder_id: str) -> LiveState:
        """The status, newest position and last ping time of one responder."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.key("status"), responder_id)
            pipe.hmget(self.key(f"r:{responder_id}"), ["lat", "lon"])
            pipe.zscore(self.key("seen"), responder_id)
            status, (lat, lon), seen = await pipe.execute()
        position = Point(lat=float(lat), lon=float(lon)) if lat and lon else None
        return LiveState(status=status, position=position, last_seen=float(seen) if seen else None)


@dataclass(frozen=True, slots=True)
class IndexAt:
    """A ``GroupedSource`` over the index at one moment."""

    index: GeoIndex
    now: datetime

    async def nearest_in_groups(
        self,
        *,
        origin: Point,
        queries: Sequence[GroupQuery],
        skills: Collection[str],
        exclude: Collection[str],
    ) -> list[GroupHits]:
        """Per query, its group's nearest eligible responders (a ``GroupedSource``)."""
        return await self.index.nearest_in_groups(
            origin=origin, queries=queries, skills=skills, exclude=exclude, now=self.now
        )
