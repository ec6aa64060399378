"""The unit of work every service uses: one transaction, the events announcing it, and what
to do once it has committed.

A command opens a unit of work, changes state through its session and stages the events
that announce the change in the service's outbox, all in one transaction. Once it has
committed the after-commit actions run (metrics, mostly) and, if anything was staged, the
outbox relay is woken so the events go out at once. Routes never touch the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Table, insert
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import SessionFactory, transaction
from shared.events import Envelope, Event
from shared.outbox import outbox_row

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


class UnitOfWork:
    """One transaction's session, the events it staged and what to run after it commits."""

    def __init__(self, session: AsyncSession, *, outbox: Table, now: datetime) -> None:
        self.session = session
        self.now = now
        self.events: list[Event] = []
        self._outbox = outbox
        self._after: list[Callable[[], object]] = []
        self._rows: list[dict[str, str]] = []

    async def stage(self, event: Event, *, correlation_id: str | None = None) -> Envelope:
        """Stage ``event`` in the outbox inside this transaction (its row is written with
        the others, in staging order, just before the commit)."""
        envelope, row = outbox_row(event, correlation_id=correlation_id, occurred_at=self.now)
        self._rows.append(row)
        self.events.append(event)
        return envelope

    async def write_outbox(self) -> None:
        """Write the staged rows in one statement (a round trip per unit of work, not per
        event); the unit of work calls this before committing."""
        if self._rows:
            rows, self._rows = self._rows, []
            await self.session.exec(insert(self._outbox), params=rows)

    def on_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` only once the transaction has committed."""
        self._after.append(action)

    def committed(self) -> None:
        """Run the after-commit actions; one failing does not stop the others."""
        for action in self._after:
            try:
                action()
            except Exception:
                log.exception("after-commit action failed")


W = TypeVar("W", bound=UnitOfWork)


@dataclass(frozen=True)
class UnitsOfWork:
    """Opens units of work for one service: its sessions, its outbox and its relay's wake-up."""

    sessions: SessionFactory
    outbox: Table
    wake_relay: Callable[[], None] = _nothing

    def begin(self, *, now: datetime) -> AbstractAsyncContextManager[UnitOfWork]:
        """A plain unit of work (``async with work.begin(now=...) as uow``)."""
        return self.open(UnitOfWork, now=now)

    @asynccontextmanager
    async def open(self, kind: type[W], *, now: datetime) -> AsyncIterator[W]:
        """A unit of work of ``kind`` (a service may extend :class:`UnitOfWork`)."""
        async with transaction(self.sessions) as session:
            uow = kind(session, outbox=self.outbox, now=now)
            yield uow
            await uow.write_outbox()
        uow.committed()
        if uow.events:
            self.wake_relay()
