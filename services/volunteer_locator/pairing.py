"""Pairing codes: a dispatcher issues a short code (or a QR of a link holding it) and the
responder's phone trades it, once, for the responder's token.

Codes live only in Redis, as an HMAC under the auth secret (a dump of Redis reveals no
code and cannot be brute-forced offline), with the expiry as the key's TTL. The trade
is one ``GETDEL``, so two phones racing with the same code cannot both win. Trades are
rate-limited per caller address, so guessing codes is hopeless within their lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from redis.asyncio import Redis

from services.volunteer_locator import service
from services.volunteer_locator.service import Locator
from services.volunteer_locator.settings import LocatorSettings
from shared.auth import Principal, Role, mint_token, require_roles
from shared.deps import ClockDep, RuntimeDep
from shared.errors import ApiError
from shared.http import client_address
from shared.webapp import error_responses

# No 0/O, 1/I/L: a code is read aloud or typed from a screen.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
# Read and delete in one step, so one code is traded once however many phones race.
_TAKE = """
local held = redis.call('GET', KEYS[1])
if held then redis.call('DEL', KEYS[1]) end
return held
"""
# Count one attempt in a fixed window; answers the count and the window's ms left.
_ATTEMPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""
APP_PATH = "/responder/"

router = APIRouter(prefix="/v1", tags=["pairing"])
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]


class PairingIssued(BaseModel):
    """A fresh pairing code, the link that carries it and that link as a QR (SVG)."""

    code: str
    expires_at: datetime
    url: str
    qr_svg: str


class PairingExchanged(BaseModel):
    """What the phone gets for a good code: who it is and its token."""

    responder_id: uuid.UUID
    token: str


def new_code(length: int) -> str:
    """A random code from the unambiguous alphabet."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalise(code: str) -> str:
    """The code as stored: upper case, without spaces or dashes."""
    return "".join(c for c in code.upper() if c not in " -")


class PairingStore:
    """Pairing codes and trade attempts in Redis."""

    def __init__(self, redis: Redis, *, secret: str, prefix: str) -> None:
        self._redis = redis
        self._secret = secret.encode()
        self._prefix = prefix

    def _key(self, code: str) -> str:
        digest = hmac.new(self._secret, normalise(code).encode(), hashlib.sha256).hexdigest()
        return f"{self._prefix}pairing:{digest}"

    async def issue(self, *, responder_id: uuid.UUID, length: int, ttl_s: int) -> str:
        """Store a new code for ``responder_id``; it lapses after ``ttl_s``."""
        while True:
            code = new_code(length)
            if await self._redis.set(self._key(code), str(responder_id), ex=ttl_s, nx=True):
                return code

    async def redeem(self, code: str) -> uuid.UUID | None:
        """The responder the code was issued for, once; None if unknown, used or lapsed."""
        held = await self._redis.eval(_TAKE, 1, self._key(code))
        if held is None:
            return None
        return uuid.UUID(held.decode() if isinstance(held, bytes) else str(held))

    async def attempt(self, *, caller: str, limit: int, window_s: int) -> int:
        """Count one trade attempt from ``caller``; seconds to wait if over ``limit``, else 0."""
        tag = hashlib.sha256(caller.encode()).hexdigest()[:32]
        key = f"{self._prefix}pairing-attempts:{tag}"
        count, ttl_ms = await self._redis.eval(_ATTEMPT, 1, key, window_s * 1000)
        if int(count) <= limit:
            return 0
        return max(1, math.ceil(int(ttl_ms) / 1000))


def get_store(request: Request) -> PairingStore:
    """The pairing store, built on first use from the locator's Redis."""
    store: PairingStore | None = getattr(request.app.state, "pairing", None)
    if store is None:
        settings: LocatorSettings = request.app.state.settings
        store = PairingStore(
            request.app.state.runtime.redis,
            secret=settings.auth_secret.get_secret_value(),
            prefix=settings.redis_prefix,
        )
        request.app.state.pairing = store
    return store


def _locator(request: Request) -> Locator:
    locator: Locator = request.app.state.locator
    return locator


StoreDep = Annotated[PairingStore, Depends(get_store)]
LocatorDep = Annotated[Locator, Depends(_locator)]


def pairing_url(*, base: str, code: str) -> str:
    """The responder app's link carrying ``code`` (in the fragment: never sent to servers)."""
    return f"{base.rstrip('/')}{APP_PATH}#code={code}"


@router.post(
    "/responders/{responder_id}/pairing",
    status_code=201,
    response_model=PairingIssued,
    responses=error_responses(401, 403, 404),
)
async def issue_pairing(
    responder_id: uuid.UUID,
    request: Request,
    _: Dispatcher,
    runtime: RuntimeDep,
    locator: LocatorDep,
    store: StoreDep,
    clock: ClockDep,
) -> PairingIssued:
    """Issue a single-use pairing code for a registered responder (dispatchers only)."""
    await service.get_responder(
        sessions=runtime.sessions, index=locator.index, responder_id=responder_id
    )  # 404 for an unknown responder
    settings = locator.settings
    code = await store.issue(
        responder_id=responder_id,
        length=settings.pairing_code_length,
        ttl_s=settings.pairing_code_ttl_s,
    )
    url = pairing_url(base=settings.app_public_url or str(request.base_url), code=code)
    return PairingIssued(
        code=code,
        expires_at=clock.now() + timedelta(seconds=settings.pairing_code_ttl_s),
        url=url,
        qr_svg=segno.make(url, error="m").svg_inline(scale=4),
    )


@router.post(
    "/pairing/{code}",
    response_model=PairingExchanged,
    responses=error_responses(404, 429),
)
async def exchange_pairing(
    code: str, request: Request, locator: LocatorDep, store: StoreDep
) -> PairingExchanged:
    """Trade a pairing code for the responder's token (no auth; each code works once)."""
    settings = locator.settings
    wait_s = await store.attempt(
        caller=client_address(request),
        limit=settings.pairing_attempts_per_window,
        window_s=settings.pairing_window_s,
    )
    if wait_s:
        raise ApiError(
            429,
            "rate_limited",
            "too many pairing attempts; try again later",
            {"retry_after_s": wait_s},
            headers={"Retry-After": str(wait_s)},
        )
    responder_id = await store.redeem(code) if 0 < len(normalise(code)) <= 16 else None
    if responder_id is None:
        raise ApiError(404, "not_found", "no such pairing code, or it was used or has expired")
    token = mint_token(
        secret=settings.auth_secret.get_secret_value(),
        role=Role.RESPONDER,
        subject=str(responder_id),
        ttl=timedelta(seconds=settings.responder_token_ttl_s),
    )
    return PairingExchanged(responder_id=responder_id, token=token)
