"""What intake accepts in a report body, without any network."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.models import ReportCreate
from services.intake.service import fingerprint, report_limits
from services.intake.settings import IntakeSettings

GOOD: dict[str, Any] = {
    "category": "theft",
    "location": {"lat": 22.54, "lon": 114.05, "accuracy_m": 12},
    "description": "bike taken from the rack",
    "address": "No. 3 Binhe Rd",
    "reporter": {"name": "Li", "phone": "+8613800138000", "device_id": "phone-1"},
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _fields(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        ReportCreate.model_validate(body)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_a_full_report_is_accepted() -> None:
    report = ReportCreate.model_validate(GOOD)
    assert report.location.lat == 22.54
    assert report.reporter is not None
    assert report.reporter.phone == "+8613800138000"


def test_integer_coordinates_are_fine() -> None:
    assert ReportCreate.model_validate(_with(location={"lat": 22, "lon": 114})).location.lon == 114


@pytest.mark.parametrize(
    ("location", "field"),
    [
        ({"lat": 90.0001, "lon": 0}, "location.lat"),
        ({"lat": -91, "lon": 0}, "location.lat"),
        ({"lat": 0, "lon": 180.5}, "location.lon"),
        ({"lat": 0, "lon": -181}, "location.lon"),
        ({"lat": math.nan, "lon": 0}, "location.lat"),
        ({"lat": 0, "lon": math.inf}, "location.lon"),
        ({"lat": "22.5", "lon": 0}, "location.lat"),
        ({"lat": True, "lon": 0}, "location.lat"),
        ({"lat": 0, "lon": 0, "accuracy_m": -1}, "location.accuracy_m"),
        ({"lat": 0}, "location.lon"),
    ],
)
def test_coordinates_must_be_finite_numbers_in_range(location: dict[str, Any], field: str) -> None:
    assert field in _fields(_with(location=location))


def test_description_is_at_most_2000_characters() -> None:
    assert ReportCreate.model_validate(_with(description="好" * 2000)).description
    assert _fields(_with(description="x" * 2001)) == {"description"}


@pytest.mark.parametrize(
    "phone", ["13800138000", "+0123456789", "+86 138 0013 8000", "+1234", "+1234567890123456"]
)
def test_phone_must_be_e164(phone: str) -> None:
    assert _fields(_with(reporter={"phone": phone})) == {"reporter.phone"}


def test_unknown_fields_are_refused_at_every_level() -> None:
    assert _fields(_with(status="resolved")) == {"status"}
    assert _fields(_with(reporter={"name": "Li", "token": "x"})) == {"reporter.token"}
    assert _fields(_with(location={"lat": 1, "lon": 1, "alt": 3})) == {"location.alt"}


def test_the_fingerprint_ignores_layout_but_not_meaning() -> None:
    reordered = {
        "reporter": GOOD["reporter"],
        "location": {"accuracy_m": 12, "lon": 114.05, "lat": 22.54},
        "address": GOOD["address"],
        "description": GOOD["description"],
        "category": "theft",
    }
    same = fingerprint(ReportCreate.model_validate(GOOD))
    assert fingerprint(ReportCreate.model_validate(reordered)) == same
    assert fingerprint(ReportCreate.model_validate(_with(category="fraud"))) != same


def test_a_post_counts_against_its_address_and_its_device() -> None:
    settings = IntakeSettings.model_validate(
        {
            "auth_secret": "x" * 32,
            "rate_limit_per_device": 2,
            "rate_limit_per_address": 9,
        }
    )
    with_device = report_limits(
        settings=settings, body=ReportCreate.model_validate(GOOD), address="10.0.0.1"
    )
    without = report_limits(
        settings=settings,
        body=ReportCreate.model_validate(_with(reporter=None)),
        address="10.0.0.1",
    )
    assert [limit.limit for limit in with_device] == [9, 2]
    assert [limit.limit for limit in without] == [9]
    # Identities are hashed, so Redis keys never hold a device id or an address.
    assert all("phone-1" not in lim.bucket and "10.0.0.1" not in lim.bucket for lim in with_device)
