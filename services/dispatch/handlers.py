"""Dispatch's event handlers: plain functions, routed by the ``HANDLERS`` table."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence

from services.dispatch import service
from services.dispatch.context import Dispatch
from shared.events import (
    AvailabilityChanged,
    BookingsResyncRequested,
    DutyChanged,
    Envelope,
    Event,
    ReportCancelled,
    ReportReceived,
)
from shared.faults import Fault, classify
from shared.handlers import ContextHandler, bind_handlers
from shared.kafka import BatchHandler, Handler
from shared.logging import correlation

# Reports of one partition handled at once: each spends most of its time waiting on
# its claim and the database, so a run of them overlaps instead of queueing.
REPORTS_AT_ONCE = 32


async def on_report_received(event: ReportReceived, _: Envelope, ctx: Dispatch) -> None:
    """Open an incident for the report (or join its duplicate) and make offers."""
    await service.receive_report(dispatch=ctx, report=event)


async def on_reports_received(
    batch: Sequence[tuple[Event, Envelope]], *, ctx: Dispatch, at_once: int = REPORTS_AT_ONCE
) -> None:
    """A partition's run of reports, side by side (reports are keyed by report id, so
    they are independent; duplicates still meet under ``Dispatch.opening_lock``).

    Any failure fails the run, transient first: the loop retries it from its first
    report, and those already handled are skipped (``receive_report`` is idempotent).
    """
    gate = asyncio.Semaphore(at_once)

    async def one(event: Event, envelope: Envelope) -> None:
        if not isinstance(event, ReportReceived):
            raise TypeError(f"not a report: {type(event).__name__}")
        async with gate:
            with correlation(envelope.correlation_id):
                await service.receive_report(dispatch=ctx, report=event)

    outcomes = await asyncio.gather(
        *(one(event, envelope) for event, envelope in batch), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        transient = [f for f in failures if classify(f) is Fault.TRANSIENT]
        raise (transient or failures)[0]


async def on_report_cancelled(event: ReportCancelled, _: Envelope, ctx: Dispatch) -> None:
    """A reporter withdrew a report."""
    await service.cancel_report(dispatch=ctx, event=event)


async def on_duty_changed(event: DutyChanged, _: Envelope, ctx: Dispatch) -> None:
    """Someone came on duty: retry the incidents waiting for a responder."""
    if event.on_duty:
        ctx.retry_soon()


async def on_availability_changed(event: AvailabilityChanged, _: Envelope, ctx: Dispatch) -> None:
    """Someone freed up: retry the incidents waiting for a responder."""
    if event.status == "free":
        ctx.retry_soon()


async def on_bookings_resync_requested(
    event: BookingsResyncRequested, _: Envelope, ctx: Dispatch
) -> None:
    """The locator rebuilt its index: restate every booking to it."""
    ctx.reconcile_soon(event.reason)


HANDLERS: Mapping[type[Event], ContextHandler[Dispatch]] = {
    ReportReceived: on_report_received,
    ReportCancelled: on_report_cancelled,
    DutyChanged: on_duty_changed,
    AvailabilityChanged: on_availability_changed,
    BookingsResyncRequested: on_bookings_resync_requested,
}

# Retrying is idempotent, so these skip the event-id bookkeeping.
NATURALLY_IDEMPOTENT: frozenset[type[Event]] = frozenset[type[Event]](
    (DutyChanged, AvailabilityChanged, BookingsResyncRequested)
)


def build_batch_handlers(dispatch: Dispatch) -> dict[type[Event], BatchHandler]:
    """Runs of reports for the consume loop (it prefers these to ``HANDLERS``)."""
    return {ReportReceived: functools.partial(on_reports_received, ctx=dispatch)}


def build_handlers(dispatch: Dispatch) -> dict[type[Event], Handler]:
    """The handlers bound to this instance's context, for the consume loop."""
    return bind_handlers(HANDLERS, dispatch)
