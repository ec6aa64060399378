"""Locks that make duplicate merging safe across dispatch instances.

Two reports of one category within the duplicate radius must meet in order: the second
sees the first's incident and joins it. Inside one instance an asyncio lock does that;
across instances (PostgreSQL) each report takes transaction-scoped advisory locks on
(category, H3 cell) for its cell and the ring of cells around it, in sorted order (no
deadlock). Cells are chosen at least as wide as the radius, so two reports within it
are in the same or neighbouring cells, and each locks the other's own cell. SQLite has
one writer anyway, so the in-process lock is all it needs.
"""

from __future__ import annotations

import hashlib

import h3
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession


def cell_resolution(radius_m: float) -> int | None:
    """The finest H3 resolution whose cells are at least ``radius_m`` wide; None if even
    the coarsest is narrower (lock the whole category then)."""
    best: int | None = None
    for res in range(0, 16):
        if h3.average_hexagon_edge_length(res, unit="m") >= radius_m:
            best = res
    return best


def lock_keys(*, category: str, lat: float, lon: float, radius_m: float) -> list[int]:
    """The advisory lock keys a report at (lat, lon) takes, sorted, as signed 64-bit ints."""
    res = cell_resolution(radius_m)
    if res is None:
        names = [category]
    else:
        cells = h3.grid_disk(h3.latlng_to_cell(lat, lon, res), 1)
        names = [f"{category}:{cell}" for cell in cells]
    return sorted({_stable_key(f"dispatch-merge:{n}") for n in names})


def _stable_key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_neighbourhood(
    session: AsyncSession, *, category: str, lat: float, lon: float, radius_m: float
) -> None:
    """Take the report's merge locks until the transaction ends (PostgreSQL only)."""
    for key in lock_keys(category=category, lat=lat, lon=lon, radius_m=radius_m):
        await session.exec(select(func.pg_advisory_xact_lock(key)))
