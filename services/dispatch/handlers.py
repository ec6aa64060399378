"""Dispatch's event handlers, routed by a plain dict."""

from __future__ import annotations

from collections.abc import Callable

from services.dispatch import service
from services.dispatch.uow import Dispatch
from shared.events import (
    AvailabilityChanged,
    DutyChanged,
    Envelope,
    Event,
    ReportCancelled,
    ReportReceived,
)
from shared.kafka import Handler


def build_handlers(
    dispatch: Dispatch, *, on_capacity: Callable[[], None]
) -> dict[type[Event], Handler]:
    """Bind the handlers to this instance's engine.

    ``on_capacity`` is called when a responder comes on duty or frees up, so that
    incidents waiting for someone are retried at once.
    """

    async def on_report_received(event: Event, _: Envelope) -> None:
        assert isinstance(event, ReportReceived)
        await service.receive_report(dispatch=dispatch, report=event)

    async def on_report_cancelled(event: Event, _: Envelope) -> None:
        assert isinstance(event, ReportCancelled)
        await service.cancel_report(dispatch=dispatch, event=event)

    async def on_duty_changed(event: Event, _: Envelope) -> None:
        assert isinstance(event, DutyChanged)
        if event.on_duty:
            on_capacity()

    async def on_availability_changed(event: Event, _: Envelope) -> None:
        assert isinstance(event, AvailabilityChanged)
        if event.status == "free":
            on_capacity()

    return {
        ReportReceived: on_report_received,
        ReportCancelled: on_report_cancelled,
        DutyChanged: on_duty_changed,
        AvailabilityChanged: on_availability_changed,
    }


# Retrying is idempotent, so these skip the event-id bookkeeping.
_RETRIES: tuple[type[Event], ...] = (DutyChanged, AvailabilityChanged)
NATURALLY_IDEMPOTENT: frozenset[type[Event]] = frozenset(_RETRIES)
