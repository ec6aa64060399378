"""The chaos run's checker reads the system's own records, as one consistent picture."""

from __future__ import annotations

from typing import Any

from tools.chaos import first_flag_at, reporter_behind


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
