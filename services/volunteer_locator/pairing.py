"""Sign-in pairing codes: a short code (and its QR) that a responder's phone exchanges once
for the responder's token, so nobody has to type a long token on a phone.

A dispatcher asks for a code with ``POST /v1/responders/{id}/pairing``; the phone posts it to
``POST /v1/pairing/{code}``. Only a hash of the code is kept, in Redis, for
``PAIRING_TTL_S`` seconds; the exchange deletes it atomically (GETDEL), so a code works
once. The code itself is the credential, so the exchange needs no token; it is
rate-limited per caller address, so guessing a code within its lifetime is hopeless.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import segno
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from services.volunteer_locator import service
from services.volunteer_locator.routes import (
    Dispatcher,
    LocatorDep,
    RevocationsDep,
    responder_token,
)
from shared.errors import AUTHENTICATED, NotFound, RateLimited, error_responses
from shared.http import client_address
from shared.ratelimit import Limit, RedisRateLimiter, bucket

# No 0/O, 1/I/L: a code is read off a screen and typed on a phone.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8

router = APIRouter(prefix="/v1", tags=["pairing"])


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


def new_code(length: int = CODE_LENGTH) -> str:
    """A random code from the unambiguous alphabet."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def pairing_url(*, base: str, code: str) -> str:
    """The responder app's sign-in link; the code rides in the fragment, which browsers
    never send, so it stays out of server logs."""
    return f"{base.rstrip('/')}/responder/#code={code}"


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


_ISSUE_ERRORS = error_responses(
    *AUTHENTICATED,
    404,
    notes={403: "Only a dispatcher may issue a pairing code", 404: "No such responder"},
)
_EXCHANGE_ERRORS = error_responses(
    404,
    422,
    429,
    notes={
        404: "Unknown, expired or already used code",
        422: "The code is not 4 to 16 letters and digits",
        429: "Too many pairing attempts from this address",
    },
)


@router.post(
    "/responders/{responder_id}/pairing",
    status_code=201,
    response_model=PairingCode,
    responses=_ISSUE_ERRORS,
)
async def issue_pairing_code(
    responder_id: uuid.UUID,
    request: Request,
    _: Dispatcher,
    locator: LocatorDep,
) -> PairingCode:
    """A one-time code (and QR) that the responder's phone exchanges for their token."""
    await service.get_responder(
        sessions=locator.sessions, index=locator.index, responder_id=responder_id
    )  # 404 for an unknown responder
    settings = locator.settings
    code = new_code()
    # The issue time rides along, so a revocation after it voids the code too.
    held = f"{responder_id} {datetime.now(UTC).timestamp()!r}"
    await locator.redis.set(code_key(settings.redis_prefix, code), held, ex=settings.pairing_ttl_s)
    url = pairing_url(base=settings.app_public_url or str(request.base_url), code=code)
    return PairingCode(
        code=code,
        expires_at=datetime.now(UTC) + timedelta(seconds=settings.pairing_ttl_s),
        url=url,
        qr_svg=qr_svg(url),
    )


@router.post("/pairing/{code}", response_model=PairedToken, responses=_EXCHANGE_ERRORS)
async def exchange_pairing_code(
    code: Annotated[str, Path(pattern=r"^[A-Za-z0-9 \-]{4,16}$")],
    request: Request,
    locator: LocatorDep,
    revocations: RevocationsDep,
) -> PairedToken:
    """Exchange a pairing code, once, for the responder's token."""
    settings = locator.settings
    limiter = RedisRateLimiter(locator.redis, namespace=f"{settings.redis_prefix}pairing-attempts")
    limit = Limit(bucket("address", client_address(request)), settings.pairing_attempts_per_window)
    wait_s = await limiter.hit([limit], window_s=settings.pairing_window_s)
    if wait_s > 0:
        raise RateLimited(
            f"too many pairing attempts; try again in {wait_s} s",
            retry_after_s=wait_s,
            details={"retry_after_s": wait_s},
        )
    held = await locator.redis.getdel(code_key(locator.settings.redis_prefix, code))
    if held is None:
        raise NotFound("unknown, expired or already used pairing code")
    raw_id, issued_at = (held.decode() if isinstance(held, bytes) else str(held)).split()
    revoked_at = revocations.revoked_at(raw_id)
    if revoked_at is not None and revoked_at >= float(issued_at):
        raise NotFound("unknown, expired or already used pairing code")
    responder_id = uuid.UUID(raw_id)
    token = responder_token(locator, responder_id, revoked_at=revoked_at)
    return PairedToken(responder_id=responder_id, token=token)
