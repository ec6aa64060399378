"""How loud an unfilled plan is: red when nobody is coming, amber when a slot is unfilled
but another unit is on its way. Pure; no I/O."""

from __future__ import annotations

from enum import StrEnum


class AlarmLevel(StrEnum):
    """What the desk sees for an incident short of responders."""

    NONE = "none"
    AMBER = "amber"  # a slot is unfilled, but a unit is coming: a notice, no sound
    RED = "red"  # nobody is coming: NoResponderAvailable


def alarm_level(*, missing_slots: int, open_offers: int, live_units: int) -> AlarmLevel:
    """The alarm for an incident with ``missing_slots`` nobody could fill, given the offers
    still open and the units not yet cleared."""
    if missing_slots == 0:
        return AlarmLevel.NONE
    if open_offers > 0 or live_units > 0:
        return AlarmLevel.AMBER
    return AlarmLevel.RED
