"""Who responds and how: the responder kinds, travel modes, availability and unit statuses
(each declared once, here), and the default travel speeds.

They are ``StrEnum``s, so code compares and passes them as the strings they are on the
wire, and their JSON Schema is the plain inline ``enum`` of values that the published
OpenAPI and AsyncAPI documents have always shown.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class WireEnum(StrEnum):
    """A string enum that validates from its values and serialises to plain strings."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """An inline ``enum`` of the values in the schema; members in Python."""
        del source, handler
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.literal_schema([member.value for member in cls]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


class ResponderKind(WireEnum):
    """Who a responder is: police patrol, auxiliary police, or a volunteer."""

    PATROL = "patrol"
    AUXILIARY = "auxiliary"
    VOLUNTEER = "volunteer"


class TravelMode(WireEnum):
    """How a responder gets to an incident."""

    FOOT = "foot"
    BICYCLE = "bicycle"
    MOTORBIKE = "motorbike"
    CAR = "car"


class Availability(WireEnum):
    """A responder's live status in the locator's index."""

    FREE = "free"
    OFFERED = "offered"
    BUSY = "busy"


class UnitStatus(WireEnum):
    """Where a responder assigned to an incident has got to; it only moves forward."""

    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    CLEARED = "cleared"


# Every kind and every travel mode as plain strings, in the order searches and gauges
# list them.
KINDS: tuple[str, ...] = tuple(kind.value for kind in ResponderKind)
TRAVEL_MODES: tuple[str, ...] = tuple(mode.value for mode in TravelMode)

# The speeds ETAs assume per travel mode, in km/h (the locator's SPEEDS_KMH default).
DEFAULT_SPEEDS_KMH: dict[str, float] = {
    TravelMode.FOOT.value: 5.0,
    TravelMode.BICYCLE.value: 15.0,
    TravelMode.MOTORBIKE.value: 30.0,
    TravelMode.CAR.value: 35.0,
}
