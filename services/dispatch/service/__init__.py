"""Dispatch's commands and queries: plain functions with keyword arguments.

Every state change happens in a unit of work together with the events that announce it.
Claims (the one synchronous call, to the locator) happen outside a transaction but inside
the incident's lock; a claim that cannot be recorded is released at once, and the
locator's own hold timer covers a crash in between.

A report flows one way through the modules: ``reports`` opens the incident, ``offers``
claims responders and answers offers, ``milestones`` judges the 1-3-5 stages; ``units``
and ``closing`` are the later commands of responders and dispatchers, ``queries`` reads.
"""

from services.dispatch.service.closing import cancel, merge, resolve
from services.dispatch.service.common import OFFER_TIMER, TARGET_TIMER
from services.dispatch.service.milestones import breach_if_due
from services.dispatch.service.offers import (
    accept_offer,
    decline_offer,
    expire_offer,
    fill_incident,
    retry_waiting,
)
from services.dispatch.service.queries import (
    NextAssignment,
    get_incident,
    list_incidents,
    next_assignment,
    offer_public,
    unit_public,
)
from services.dispatch.service.reports import cancel_report, receive_report
from services.dispatch.service.units import assign, set_unit_status

__all__ = [
    "OFFER_TIMER",
    "TARGET_TIMER",
    "NextAssignment",
    "accept_offer",
    "assign",
    "breach_if_due",
    "cancel",
    "cancel_report",
    "decline_offer",
    "expire_offer",
    "fill_incident",
    "get_incident",
    "list_incidents",
    "merge",
    "next_assignment",
    "offer_public",
    "receive_report",
    "resolve",
    "retry_waiting",
    "set_unit_status",
    "unit_public",
]
