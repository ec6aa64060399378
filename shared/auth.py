"""Bearer-token auth with the roles of docs/contract.md (HTTP API v1).

Tokens are HS256-signed JWTs. ``sub`` is the identity the role is bound to: the
report id for a reporter, the responder id for a responder, a name otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import ApiError

ALGORITHM = "HS256"
ISSUER = "quick-response-dispatch"


class Role(StrEnum):
    """Who a caller is."""

    REPORTER = "reporter"
    RESPONDER = "responder"
    DISPATCHER = "dispatcher"
    OPERATOR = "operator"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """The verified caller: a role and the identity it is bound to."""

    role: Role
    subject: str

    def is_(self, role: Role, subject: str | None = None) -> bool:
        """Whether this caller has ``role`` (and, if given, is bound to ``subject``)."""
        return self.role is role and (subject is None or self.subject == str(subject))


def mint_token(
    *, secret: str, role: Role | str, subject: str, ttl: timedelta = timedelta(hours=12)
) -> str:
    """Sign a token for ``role`` bound to ``subject``."""
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": str(subject),
        "role": Role(role).value,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, *, secret: str) -> Principal:
    """Check the signature and expiry and return the caller; raises 401 otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
        return Principal(role=Role(claims["role"]), subject=str(claims["sub"]))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise ApiError(401, "unauthorized", "invalid or expired token") from exc


_bearer = HTTPBearer(auto_error=False)


def _secret_from(request: Request) -> str:
    secret: str = request.app.state.settings.auth_secret.get_secret_value()
    return secret


def token_from_request(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The bearer token, or ``access_token`` in the query for EventSource clients."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    # Browsers' EventSource cannot set headers, so live streams also take the token here.
    query_token = request.query_params.get("access_token")
    if query_token:
        return query_token
    raise ApiError(401, "unauthorized", "a bearer token is required")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Verify the caller's token."""
    return verify_token(token_from_request(request, credentials), secret=_secret_from(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through (403 for the rest)."""

    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise ApiError(403, "forbidden", "this role may not do that")
        return principal

    return check


def require_self_or(
    principal: Principal, *, role: Role, subject: str, others: Sequence[Role]
) -> None:
    """Allow the caller bound to ``subject`` with ``role``, or any of ``others``; else 403."""
    if principal.is_(role, subject) or principal.role in others:
        return
    raise ApiError(403, "forbidden", "you may only act for yourself")


def main(argv: Sequence[str] | None = None) -> int:
    """Print a signed token: ``python -m shared.auth --role dispatcher [--sub name]``."""
    parser = argparse.ArgumentParser(description="Mint a bearer token for the API.")
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--sub", default=None, help="identity the token is bound to")
    parser.add_argument("--ttl-hours", type=float, default=12.0)
    parser.add_argument("--secret", default=os.environ.get("AUTH_SECRET"))
    args = parser.parse_args(argv)
    if not args.secret:
        print("AUTH_SECRET is not set", file=sys.stderr)
        return 2
    subject = args.sub or f"dev-{args.role}"
    print(
        mint_token(
            secret=args.secret,
            role=args.role,
            subject=subject,
            ttl=timedelta(hours=args.ttl_hours),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
