"""Sign-in pairing codes: a short code (and its QR) that a responder's phone exchanges once
for the responder's token, so nobody has to type a long token on a phone.

A dispatcher asks for a code with ``POST /v1/responders/{id}/pairing``; the phone posts it to
``POST /v1/pairing/{code}``. Only a hash of the code is kept, in Redis, for
``PAIRING_TTL_S`` seconds; the exchange deletes it atomically (GETDEL), so a code works
once. The code itself is the credential, so the exchange needs no token.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel
from redis.asyncio import Redis

from services.volunteer_locator import service
from services.volunteer_locator.routes import (
    Dispatcher,
    LocatorDep,
    RevocationsDep,
    responder_token,
)
from shared.deps import RuntimeDep
from shared.errors import NotFound

# No 0/O, 1/I/L: a code is read off a screen and typed on a phone.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8

router = APIRouter(prefix="/v1", tags=["pairing"])


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {code, message, details}}``."""

    error: ErrorDetail


class PairingCode(BaseModel):
    """A one-time sign-in code for a responder's phone, with the link and QR that carry it."""

    code: str
    expires_at: datetime
    url: str
    qr_svg: str


class PairedToken(BaseModel):
    """What the phone gets for a valid code: the responder's id and app token."""

    responder_id: uuid.UUID
    token: str


def new_code() -> str:
    """A random code from the unambiguous alphabet."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise(code: str) -> str:
    """Codes are typed on phones: case, spaces and dashes do not matter."""
    return code.upper().replace("-", "").replace(" ", "")


def code_key(prefix: str, code: str) -> str:
    """The Redis key of a code: its SHA-256, never the code itself."""
    digest = hashlib.sha256(normalise(code).encode()).hexdigest()
    return f"{prefix}pairing:{digest}"


def qr_svg(url: str) -> str:
    """The URL as a QR code in SVG (no XML declaration, so it embeds as an image)."""
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="svg", xmldecl=False, scale=6, border=2)
    return out.getvalue().decode()


def _redis(request: Request) -> Redis:
    redis: Redis = request.app.state.runtime.redis
    return redis


RedisDep = Annotated[Redis, Depends(_redis)]

_ISSUE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No token, or a bad, revoked or expired one"},
    403: {"model": ErrorBody, "description": "Only a dispatcher may issue a pairing code"},
    404: {"model": ErrorBody, "description": "No such responder"},
}
_EXCHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown, expired or already used code"},
    422: {"model": ErrorBody, "description": "The code is not 4 to 16 letters and digits"},
}


@router.post(
    "/responders/{responder_id}/pairing",
    status_code=201,
    response_model=PairingCode,
    responses=_ISSUE_ERRORS,
)
async def issue_pairing_code(
    responder_id: uuid.UUID,
    _: Dispatcher,
    runtime: RuntimeDep,
    locator: LocatorDep,
    redis: RedisDep,
) -> PairingCode:
    """A one-time code (and QR) that the responder's phone exchanges for their token."""
    await service.get_responder(
        sessions=runtime.sessions, index=locator.index, responder_id=responder_id
    )  # 404 for an unknown responder
    settings = locator.settings
    code = new_code()
    # The issue time rides along, so a revocation after it voids the code too.
    held = f"{responder_id} {datetime.now(UTC).timestamp()!r}"
    await redis.set(code_key(settings.redis_prefix, code), held, ex=settings.pairing_ttl_s)
    url = settings.pairing_url.format(code=code)
    return PairingCode(
        code=code,
        expires_at=datetime.now(UTC) + timedelta(seconds=settings.pairing_ttl_s),
        url=url,
        qr_svg=qr_svg(url),
    )


@router.post("/pairing/{code}", response_model=PairedToken, responses=_EXCHANGE_ERRORS)
async def exchange_pairing_code(
    code: Annotated[str, Path(pattern=r"^[A-Za-z0-9 \-]{4,16}$")],
    locator: LocatorDep,
    revocations: RevocationsDep,
    redis: RedisDep,
) -> PairedToken:
    """Exchange a pairing code, once, for the responder's token."""
    held = await redis.getdel(code_key(locator.settings.redis_prefix, code))
    if held is None:
        raise NotFound("unknown, expired or already used pairing code")
    raw_id, issued_at = (held.decode() if isinstance(held, bytes) else str(held)).split()
    revoked_at = revocations.revoked_at(raw_id)
    if revoked_at is not None and revoked_at >= float(issued_at):
        raise NotFound("unknown, expired or already used pairing code")
    responder_id = uuid.UUID(raw_id)
    token = responder_token(locator, responder_id, revoked_at=revoked_at)
    return PairedToken(responder_id=responder_id, token=token)
