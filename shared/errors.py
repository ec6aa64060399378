"""One error shape for every service: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """A failed command: the status, a stable code, a human message and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class DomainError(Exception):
    """A command the service refused: a stable code, a human message and optional details.

    Services raise the subclasses below and know nothing of HTTP; the edge
    (:func:`install_error_handlers`) turns them into the error contract.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.code = code or type(self).code
        self.message = message
        self.details = details


class NotFound(DomainError):
    """The thing named does not exist."""

    code = "not_found"


class Conflict(DomainError):
    """The current state does not allow the command."""

    code = "conflict"


class Forbidden(DomainError):
    """The caller may not do this to that thing."""

    code = "forbidden"


class Invalid(DomainError):
    """The command makes no sense as given."""

    code = "invalid_input"


class Unavailable(DomainError):
    """Something the command needs cannot answer now; trying again later may work."""

    code = "unavailable"


class Unauthenticated(DomainError):
    """The caller's credentials are missing, bad, expired or revoked."""

    code = "unauthorized"


class Malformed(DomainError):
    """Part of the request (a header, an id we issued) cannot be read at all."""

    code = "bad_request"


class RateLimited(DomainError):
    """The caller asked too often; ``retry_after_s`` says when to try again."""

    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after_s: int, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after_s = retry_after_s


_DOMAIN_STATUS: dict[type, int] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Invalid: 422,
    Unavailable: 503,
    Unauthenticated: 401,
    Malformed: 400,
    RateLimited: 429,
}


def headers_of(exc: DomainError) -> dict[str, str] | None:
    """The HTTP headers a domain error answers with (``Retry-After`` when rate-limited)."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    return None


def status_of(exc: DomainError) -> int:
    """The HTTP status a domain error answers with."""
    for kind in type(exc).__mro__:
        if kind in _DOMAIN_STATUS:
            return _DOMAIN_STATUS[kind]
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The JSON document for an error."""
    return {"error": {"code": code, "message": message, "details": details}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in err.get("loc", ()) if part != "body"),
            "problem": err.get("msg", "invalid"),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, ours or the framework's, answer in the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            status_code=status_of(exc),
            headers=headers_of(exc),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        fields = ", ".join(sorted({d["field"] or "body" for d in details}))
        return JSONResponse(
            error_body("invalid_input", f"the request is invalid: {fields}", details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # The framework's only 400: a body it could not decode (not UTF-8, say). That is
            # invalid input like any other, so it answers as every other invalid body does.
            return JSONResponse(
                error_body("invalid_input", "the body could not be decoded", str(exc.detail)),
                status_code=422,
            )
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a human message and optional details."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request cannot be understood",
    401: "No token, or an invalid or expired one",
    403: "The token's role or identity may not do this",
    404: "No such resource (or not visible to this caller)",
    409: "Conflicts with the resource's current state",
    413: "The body is over the size limit",
    422: "Invalid input; nothing was changed",
    429: "Too many requests; retry after the Retry-After header's seconds",
    503: "A component this needs is unavailable; try again",
}

# The statuses every route behind a bearer token can answer.
AUTHENTICATED = (401, 403)


def error_responses(
    *statuses: int, notes: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer ``statuses``, each with the error schema.

    ``error_responses(*AUTHENTICATED, 404, 409)``; ``notes`` replaces a status's generic
    description with what it means on this route. Documenting 422 here also replaces
    FastAPI's default validation schema, which is not the shape the services answer in.
    """
    said = notes or {}
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ErrorResponse,
            "description": said.get(status, ERROR_DESCRIPTIONS.get(status, "Error")),
        }
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "schema": {"type": "integer"},
                }
            }
        documented[status] = entry
    return documented
