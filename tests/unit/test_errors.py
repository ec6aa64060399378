"""Domain errors answer in the one error shape, with the status of their kind."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    Malformed,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    install_error_handlers,
)


def _client_raising(error: DomainError) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return TestClient(app)


def test_each_domain_error_answers_its_status_code_and_message() -> None:
    cases: list[tuple[DomainError, int, str]] = [
        (NotFound("no such incident"), 404, "not_found"),
        (Conflict("the incident is resolved", code="incident_closed"), 409, "incident_closed"),
        (Forbidden("this offer was made to someone else"), 403, "forbidden"),
        (Invalid("an incident cannot be merged into itself"), 422, "invalid_input"),
        (
            Unavailable("the locator cannot answer now", code="locator_unavailable"),
            503,
            "locator_unavailable",
        ),
        (Unauthenticated("a bearer token is required"), 401, "unauthorized"),
        (
            Malformed("Last-Event-ID is not an id we sent", code="bad_last_event_id"),
            400,
            "bad_last_event_id",
        ),
        (RateLimited("too many", retry_after_s=3), 429, "rate_limited"),
    ]
    for error, status, code in cases:
        answer = _client_raising(error).get("/boom")
        assert answer.status_code == status
        assert answer.json() == {"error": {"code": code, "message": error.message, "details": None}}


def test_details_travel_with_the_error() -> None:
    answer = _client_raising(Conflict("taken", details={"by": "someone"})).get("/boom")
    assert answer.json()["error"]["details"] == {"by": "someone"}


def test_a_rate_limited_answer_says_when_to_retry() -> None:
    answer = _client_raising(RateLimited("too many", retry_after_s=7)).get("/boom")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
