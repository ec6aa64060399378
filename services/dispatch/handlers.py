"""Dispatch's event handlers: plain functions, routed by the ``HANDLERS`` table."""

from __future__ import annotations

from collections.abc import Mapping

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
from shared.handlers import ContextHandler, bind_handlers
from shared.kafka import Handler


async def on_report_received(event: ReportReceived, _: Envelope, ctx: Dispatch) -> None:
    """Open an incident for the report (or join its duplicate) and make offers."""
    await service.receive_report(dispatch=ctx, report=event)


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


def build_handlers(dispatch: Dispatch) -> dict[type[Event], Handler]:
    """The handlers bound to this instance's context, for the consume loop."""
    return bind_handlers(HANDLERS, dispatch)
