"""The chaos run's checker reads the system's own records, as one consistent picture."""

from __future__ import annotations

from typing import Any

from tools.chaos import first_flag_at, late_action, reporter_behind


def _incident(status: str = "open", offers: int = 0, flags: tuple[str, ...] = ()) -> Any:
    return {
        "status": status,
        "offers": [{"offer_id": str(i)} for i in range(offers)],
        "timeline": [
            {"at": "2026-01-01T00:00:00Z", "type": "IncidentOpened", "detail": {}},
            *({"at": at, "type": "NoResponderAvailable", "detail": {}} for at in flags),
        ],
    }


def test_a_reporter_still_waiting_for_a_free_responder_is_not_behind() -> None:
    assert not reporter_behind("received", _incident(flags=("2026-01-01T00:00:02Z",)))


def test_a_reporter_who_never_heard_of_an_offer_or_the_close_is_behind() -> None:
    assert reporter_behind("received", _incident(offers=1))
    assert reporter_behind("received", _incident(status="resolved"))
    assert reporter_behind(None, _incident())
    assert not reporter_behind("dispatched", _incident(offers=1))


def test_the_first_no_responder_flag_is_read_from_the_incidents_timeline() -> None:
    incident = _incident(flags=("2026-01-01T00:00:09Z", "2026-01-01T00:00:04Z"))
    assert first_flag_at(incident) == 1_767_225_604.0
    assert first_flag_at(_incident()) is None


ARRIVED = "2026-01-01T00:00:00+00:00"
T_ARRIVED = 1_767_225_600.0


def _waiting(*, closed_at: str | None = None, offered_at: str | None = None) -> Any:
    offers = [{"offered_at": offered_at}] if offered_at else []
    return {"received_at": ARRIVED, "closed_at": closed_at, "offers": offers}


def test_an_incident_nobody_acted_on_by_its_deadline_fails() -> None:
    assert late_action(_waiting(), flagged_at=None, last_fault_end=0.0) is not None
    late = _waiting(offered_at="2026-01-01T00:00:45+00:00")
    assert "45.0s after" in str(late_action(late, flagged_at=None, last_fault_end=0.0))


def test_an_offer_or_flag_in_time_after_the_last_fault_passes() -> None:
    offered = _waiting(offered_at="2026-01-01T00:00:50+00:00")
    assert late_action(offered, flagged_at=None, last_fault_end=T_ARRIVED + 25) is None
    assert late_action(_waiting(), flagged_at=T_ARRIVED + 10, last_fault_end=0.0) is None


def test_an_incident_a_dispatcher_closed_before_its_deadline_left_nothing_to_offer() -> None:
    closed_early = _waiting(closed_at="2026-01-01T00:00:20+00:00")
    assert late_action(closed_early, flagged_at=None, last_fault_end=0.0) is None
    closed_late = _waiting(closed_at="2026-01-01T00:00:40+00:00")
    assert late_action(closed_late, flagged_at=None, last_fault_end=0.0) is not None
