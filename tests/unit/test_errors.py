"""Domain errors answer in the one error shape, with the status of their kind."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
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
    ]
    for error, status, code in cases:
        answer = _client_raising(error).get("/boom")
        assert answer.status_code == status
        assert answer.json() == {"error": {"code": code, "message": error.message, "details": None}}


def test_details_travel_with_the_error() -> None:
    answer = _client_raising(Conflict("taken", details={"by": "someone"})).get("/boom")
    assert answer.json()["error"]["details"] == {"by": "someone"}
