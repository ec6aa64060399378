"""Dispatch's event handlers, routed by a plain dict."""

from __future__ import annotations

from services.dispatch import service
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.models import OUTBOX
from shared.events import Envelope, Event, ReportReceived
from shared.kafka import Handler
from shared.runtime import Runtime


def build_handlers(runtime: Runtime, metrics: DispatchMetrics) -> dict[type[Event], Handler]:
    """Bind the handlers to this instance's runtime."""

    async def on_report_received(event: Event, _: Envelope) -> None:
        assert isinstance(event, ReportReceived)
        incident = await service.open_incident(
            sessions=runtime.sessions, outbox=OUTBOX, report=event
        )
        if incident is not None:
            metrics.incidents_opened.labels(incident.category).inc()

    return {ReportReceived: on_report_received}
