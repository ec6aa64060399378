"""Persisted timers: offer expiries and stage deadlines.

Timers are rows with a ``due_at``. :func:`fire_due_timers` fires every row due at
``now``, each in its own transaction that deletes the row with the state change it
causes, so a crash fires it again after a restart and never twice. The
:class:`TimerScheduler` sleeps until the next row is due (or something is added),
and, in a loop of its own, offers again where an offer lapsed and retries incidents
still waiting for a responder on a slow beat. The two loops are apart because a retry
pass asks the locator once per waiting slot: under load it takes many seconds, and a
timer waiting behind it fires late (an offer outlives its expiry, and the locator's
hold on that responder lapses while dispatch still counts them as offered).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlmodel import col, func, select

from services.dispatch import service
from services.dispatch.context import Dispatch
from services.dispatch.domain import IncidentStatus, OfferStatus
from services.dispatch.models import Incident, Offer, Timer
from services.dispatch.uow import unit_of_work
from shared.clock import utc
from shared.tasks import finish, wait_until_set

log = logging.getLogger(__name__)


async def _fire_one(dispatch: Dispatch, timer: Timer, now: datetime) -> tuple[bool, bool]:
    """Fire one timer; returns whether this call fired it and whether its incident needs
    a new offer."""
    async with dispatch.incident_lock(timer.incident_id), unit_of_work(dispatch, now=now) as uow:
        s = uow.session
        # Another instance may be firing it; SKIP LOCKED lets each row go to one of them.
        row = (
            await s.exec(
                select(Timer).where(col(Timer.id) == timer.id).with_for_update(skip_locked=True)
            )
        ).first()
        if row is None:
            return False, False
        await s.delete(row)
        kind = row.kind
        uow.on_commit(lambda: dispatch.metrics.timers_fired.labels(kind).inc())
        incident = await s.get(Incident, row.incident_id, with_for_update=True)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return True, False
        if row.kind == service.OFFER_TIMER:
            offer = await s.get(Offer, uuid.UUID(row.ref), with_for_update=True)
            if offer is None or offer.status != OfferStatus.PENDING:
                return True, False
            await service.expire_offer(uow, dispatch, incident, offer)
            return True, True
        await service.breach_if_due(uow, dispatch, incident, row.ref)
        return True, False


async def fire_due_timers(
    *,
    dispatch: Dispatch,
    now: datetime,
    refill: Callable[[uuid.UUID], None] | None = None,
) -> int:
    """Fire every timer due at ``now``; offer again where an offer lapsed (at once, or by
    handing the incident to ``refill``). Returns how many fired."""
    fired = 0
    batch = dispatch.settings.timer_batch
    while True:
        async with dispatch.sessions() as s:
            due = (
                await s.exec(
                    select(Timer)
                    .where(col(Timer.due_at) <= now)
                    .order_by(col(Timer.due_at))
                    .limit(batch)
                )
            ).all()
        progressed = False
        for timer in due:
            try:
                was_fired, needs_offer = await _fire_one(dispatch, timer, now)
            except Exception:
                log.exception("timer failed; it stays due and is tried again")
                continue
            progressed = True
            fired += was_fired
            if needs_offer and refill is not None:
                refill(timer.incident_id)
            elif needs_offer:
                await service.fill_incident(dispatch=dispatch, incident_id=timer.incident_id)
        if not progressed or len(due) < batch:
            return fired


async def next_due_at(*, dispatch: Dispatch) -> datetime | None:
    """When the earliest timer is due."""
    async with dispatch.sessions() as s:
        due: datetime | None = (await s.exec(select(func.min(Timer.due_at)))).one()
    if due is None:
        return None
    # min() bypasses the column type on SQLite, so the value may come back naive or as text.
    if isinstance(due, str):
        due = datetime.fromisoformat(due)
    return utc(due)


class TimerScheduler:
    """Fires timers when they fall due and, beside that, offers again and retries waiting
    incidents; a slow retry pass never holds up a timer."""

    def __init__(self, dispatch: Dispatch, *, idle_s: float = 5.0) -> None:
        self._dispatch = dispatch
        self._idle_s = idle_s
        self._wake = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._retry_now = False
        self._refills: dict[uuid.UUID, None] = {}
        self._stopping = False
        # When the timer loop will look again by itself; None while it is working.
        self._asleep_until: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self, due_at: datetime | None = None) -> None:
        """A timer due at ``due_at`` was added: look again at what is due next, unless the
        loop already means to look before then (offers and 1-3-5 stages are due in seconds
        or minutes, so most commits need not wake it)."""
        asleep_until = self._asleep_until
        if due_at is None or asleep_until is None or utc(due_at) < asleep_until:
            self._wake.set()

    def retry_soon(self) -> None:
        """Someone came on duty or freed up: retry the incidents that found nobody, now."""
        self._retry_now = True
        self._retry_wake.set()

    def refill(self, incident_id: uuid.UUID) -> None:
        """An offer of ``incident_id`` lapsed: offer the next nearest, in the retry loop."""
        self._refills[incident_id] = None
        self._retry_wake.set()

    async def start(self) -> None:
        """Start both loops."""
        self._tasks = [
            asyncio.create_task(self._run_timers(), name="dispatch-timers"),
            asyncio.create_task(self._run_retries(), name="dispatch-retries"),
        ]

    async def stop(self) -> None:
        """Stop after the timer and the incident in hand."""
        self._stopping = True
        self._wake.set()
        self._retry_wake.set()
        for task in self._tasks:
            await finish(task, timeout_s=5)

    async def _run_timers(self) -> None:
        dispatch = self._dispatch
        while not self._stopping:
            self._wake.clear()
            sleep_s = self._idle_s
            try:
                await fire_due_timers(
                    dispatch=dispatch, now=dispatch.clock.now(), refill=self.refill
                )
                due = await next_due_at(dispatch=dispatch)
                if due is not None:
                    until_due = (due - dispatch.clock.now()).total_seconds()
                    sleep_s = min(sleep_s, max(0.0, until_due))
            except Exception:
                log.exception("timer loop failed; retrying")
                sleep_s = 1.0
            self._asleep_until = dispatch.clock.now() + timedelta(seconds=sleep_s)
            await wait_until_set(self._wake, sleep_s)
            self._asleep_until = None

    async def _run_retries(self) -> None:
        loop = asyncio.get_running_loop()
        dispatch = self._dispatch
        retry_every = dispatch.settings.retry_interval_s
        next_retry = loop.time()
        while not self._stopping:
            self._retry_wake.clear()
            try:
                refills, self._refills = list(self._refills), {}
                for incident_id in refills:
                    # A failure here is left to the periodic retry, which covers every
                    # open incident short of units.
                    await service.fill_incident(dispatch=dispatch, incident_id=incident_id)
                if loop.time() >= next_retry:
                    self._retry_now = False
                    next_retry = loop.time() + retry_every
                    await service.retry_waiting(dispatch=dispatch)
                    await dispatch.refresh_gauges()
                elif self._retry_now:
                    # Capacity came back (20 a second under load): only the incidents that
                    # found nobody can use it; the rest are in hand or wait for the beat.
                    self._retry_now = False
                    await service.retry_waiting(dispatch=dispatch, flagged_only=True)
                sleep_s = max(0.0, next_retry - loop.time())
            except Exception:
                log.exception("retry loop failed; retrying")
                sleep_s = 1.0
            await wait_until_set(self._retry_wake, sleep_s)
