"""The claim contract between dispatch and the volunteer-locator (docs/internal-api.md):
the request, the answer and the refusals, used by both sides.

The answer is read leniently (unknown fields are ignored), so the locator may add
optional fields to it without dispatch having to change first.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.errors import Conflict, NotFound
from shared.events import ResponderKind, TravelMode

# Redis GEO cannot index latitudes beyond this (Web Mercator's limit).
MAX_GEO_LAT = 85.05112878

Skill = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_\-]{1,40}$")]
Latitude = Annotated[float, Field(ge=-MAX_GEO_LAT, le=MAX_GEO_LAT, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]

# The refusals' error codes: 404 when nobody eligible is free, 409 when a named
# responder is not free.
NO_RESPONDER_AVAILABLE = "no_responder_available"
RESPONDER_UNAVAILABLE = "responder_unavailable"


class ClaimRequest(BaseModel):
    """The body of ``POST /v1/claims`` (docs/internal-api.md)."""

    model_config = ConfigDict(extra="forbid")

    incident_id: uuid.UUID
    lat: Latitude
    lon: Longitude
    kinds: list[ResponderKind] | None = None
    skills: list[Skill] = Field(default_factory=list, max_length=20)
    exclude: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    responder_id: uuid.UUID | None = None
    hold_s: int | None = Field(
        default=None, ge=1, le=3600, description="Capped at the locator's CLAIM_HOLD_S."
    )
    trace: bool = Field(
        default=False, description="Answer with the decision trace (ignored for a named claim)."
    )


class TracedCandidate(BaseModel):
    """One of the top candidates a claim ranked, and what became of them."""

    responder_id: uuid.UUID
    kind: str
    travel_mode: str
    skills: list[str]
    distance_m: float
    eta_s: float
    outcome: Literal["claimed", "passed", "ranked_lower"] = Field(
        description="claimed; passed (ranked above the claimed one but not bookable, see "
        "reason); ranked_lower (behind the claimed one)."
    )
    reason: str | None = None


class PassedOver(BaseModel):
    """A responder closer than the claimed one (by straight line or ETA) who was not asked."""

    responder_id: uuid.UUID
    kind: str
    travel_mode: str
    distance_m: float
    eta_s: float
    reason: str = Field(
        description="revoked, off_duty, excluded (the caller's list), busy, stale_position, "
        "wrong_kind, wrong_skill or slower_eta."
    )


class ClaimTrace(BaseModel):
    """What a claim considered: bounded (the top candidates and a capped passed-over list)."""

    radius_m: float = Field(description="The search radius that proved the ranking complete.")
    radius_step: int = Field(description="Which radius step (1 = the first) it fell in.")
    candidates: list[TracedCandidate]
    passed_over: list[PassedOver]


class ClaimGranted(BaseModel):
    """The 200 answer to a claim: who is now offered, held for the incident."""

    responder_id: uuid.UUID
    kind: ResponderKind
    travel_mode: TravelMode
    distance_m: float
    eta_s: float
    radius_m: float
    hold_s: int = Field(description="How long the claim holds unless confirmed or released.")
    trace: ClaimTrace | None = Field(default=None, description="When the claim asked for it.")


class ReleaseRequest(BaseModel):
    """The body of ``POST /v1/claims/release``."""

    model_config = ConfigDict(extra="forbid")

    responder_id: uuid.UUID
    incident_id: uuid.UUID


class ReleaseResult(BaseModel):
    """Whether the release freed the responder (False: not held for that incident)."""

    responder_id: uuid.UUID
    released: bool


def nobody_available(*, radius_m: float) -> NotFound:
    """The refusal when nobody eligible is free within the search radius (404)."""
    return NotFound(
        "nobody eligible is free within the search radius",
        code=NO_RESPONDER_AVAILABLE,
        details={"radius_m": radius_m},
    )


def responder_not_free() -> Conflict:
    """The refusal when the named responder is not free (409)."""
    return Conflict("that responder is not free", code=RESPONDER_UNAVAILABLE)
