"""Bearer-token auth with the roles of docs/contract.md (HTTP API v1): roles,
audiences and revocation (docs/security.md).

Tokens are HS256-signed JWTs. ``sub`` is the identity the role is bound to: the
report id for a reporter, the responder id for a responder, a name otherwise.
``aud`` lists the services the token is good at; ``iat`` (milliseconds) lets a
service refuse a responder's tokens issued before that responder was revoked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Protocol

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import Forbidden, Unauthenticated

ALGORITHM = "HS256"
ISSUER = "quick-response-dispatch"

# Audiences are the service names (each service's SERVICE_NAME): a token is good only
# at the services it names, and each service checks that it is one of them.
INTAKE = "intake"
DISPATCH = "dispatch"
LOCATOR = "volunteer-locator"
NOTIFICATION = "notification"
ALL_SERVICES: tuple[str, ...] = (INTAKE, DISPATCH, LOCATOR, NOTIFICATION)
# Tolerated clock difference between the service that minted a token and the one checking it.
CLOCK_SKEW_S = 5


class Role(StrEnum):
    """Who a caller is."""

    REPORTER = "reporter"
    RESPONDER = "responder"
    DISPATCHER = "dispatcher"
    OPERATOR = "operator"
    SERVICE = "service"


DEFAULT_AUDIENCES: dict[Role, tuple[str, ...]] = {
    # The tracking token follows a report (intake) and may register its webhook (notification).
    Role.REPORTER: (INTAKE, NOTIFICATION),
    # The responder app: duty and pings, offers and units, its live stream.
    Role.RESPONDER: (LOCATOR, DISPATCH, NOTIFICATION),
    Role.DISPATCHER: ALL_SERVICES,
    Role.OPERATOR: ALL_SERVICES,
    # Service tokens minted by a service name the one service they call (see mint sites).
    Role.SERVICE: ALL_SERVICES,
}


RESPONDER_AUDIENCE = DEFAULT_AUDIENCES[Role.RESPONDER]
REPORTER_AUDIENCE = DEFAULT_AUDIENCES[Role.REPORTER]


@dataclass(frozen=True)
class Principal:
    """The verified caller: a role, the identity it is bound to and when its token was issued."""

    role: Role
    subject: str
    issued_at: float = field(default=0.0, compare=False)

    def is_(self, role: Role, subject: str | None = None) -> bool:
        """Whether this caller has ``role`` (and, if given, is bound to ``subject``)."""
        return self.role is role and (subject is None or self.subject == str(subject))


def mint_token(
    *,
    secret: str,
    role: Role | str,
    subject: str,
    ttl: timedelta = timedelta(hours=12),
    audience: Sequence[str] | None = None,
    issued_at: datetime | None = None,
) -> str:
    """Sign a token for ``role`` bound to ``subject``, good at the ``audience`` services.

    ``audience`` defaults to the role's :data:`DEFAULT_AUDIENCES`. ``iat`` keeps
    milliseconds, so a token issued just after a revocation is told from one just before.
    """
    role = Role(role)
    now = issued_at or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": str(subject),
        "role": role.value,
        "aud": list(audience if audience is not None else DEFAULT_AUDIENCES[role]),
        "iat": round(now.timestamp(), 3),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, *, secret: str, audience: str) -> Principal:
    """Check signature, expiry and that ``audience`` (this service) is named; else 401."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=audience,
            options={"require": ["exp", "sub", "iss", "aud", "iat"]},
            leeway=CLOCK_SKEW_S,
        )
        return Principal(
            role=Role(claims["role"]),
            subject=str(claims["sub"]),
            issued_at=float(claims["iat"]),
        )
    except jwt.InvalidAudienceError as exc:
        raise Unauthenticated("this token is not for this service") from exc
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        raise Unauthenticated("invalid or expired token") from exc


class RevocationCheck(Protocol):
    """Answers whether a responder's token was issued before that responder was revoked."""

    def is_revoked(self, responder_id: str, issued_at: float) -> bool:
        """True if a token of ``responder_id`` issued at ``issued_at`` must be refused."""
        ...


_bearer = HTTPBearer(auto_error=False)


def _secret_from(request: Request) -> str:
    secret: str = request.app.state.settings.auth_secret.get_secret_value()
    return secret


def token_from_request(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    allow_query: bool = False,
) -> str:
    """The bearer token; live streams (``allow_query``) also take ``?access_token=``.

    Elsewhere a token in the query is refused outright: URLs end up in logs and
    browser history, so only EventSource, which cannot set headers, may use it.
    """
    query_token = request.query_params.get("access_token")
    if query_token is not None and not allow_query:
        raise Unauthenticated("access_token in the query is accepted on live streams only")
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    if query_token:
        return query_token
    raise Unauthenticated("a bearer token is required")


def authenticate(request: Request, token: str) -> Principal:
    """Verify ``token`` for this service (audience = its service name) and refuse revoked ones."""
    principal = verify_token(
        token, secret=_secret_from(request), audience=request.app.state.settings.service_name
    )
    revocations: RevocationCheck | None = getattr(request.app.state, "revocations", None)
    if (
        principal.role is Role.RESPONDER
        and revocations is not None
        and revocations.is_revoked(principal.subject, principal.issued_at)
    ):
        raise Unauthenticated("this token was revoked; ask for a new one", code="token_revoked")
    return principal


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Verify the caller's bearer token."""
    return authenticate(request, token_from_request(request, credentials))


async def current_stream_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Verify the caller of a live stream: bearer token or ``?access_token=``."""
    return authenticate(request, token_from_request(request, credentials, allow_query=True))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
StreamPrincipal = Annotated[Principal, Depends(current_stream_principal)]


def require_roles(*roles: Role, stream: bool = False) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only ``roles`` through (403 for the rest).

    ``stream`` marks a live-stream route, which also takes ``?access_token=``.
    """

    def gate(principal: Principal) -> Principal:
        if principal.role not in roles:
            raise Forbidden("this role may not do that")
        return principal

    async def check(principal: CurrentPrincipal) -> Principal:
        return gate(principal)

    async def check_stream(principal: StreamPrincipal) -> Principal:
        return gate(principal)

    return check_stream if stream else check


def require_self_or(
    principal: Principal, *, role: Role, subject: str, others: Sequence[Role]
) -> None:
    """Allow the caller bound to ``subject`` with ``role``, or any of ``others``; else 403."""
    if principal.is_(role, subject) or principal.role in others:
        return
    raise Forbidden("you may only act for yourself")


def main(argv: Sequence[str] | None = None) -> int:
    """Print a signed token: ``python -m shared.auth --role dispatcher [--sub name]``."""
    parser = argparse.ArgumentParser(description="Mint a bearer token for the API.")
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--sub", default=None, help="identity the token is bound to")
    parser.add_argument("--ttl-hours", type=float, default=12.0)
    parser.add_argument("--secret", default=os.environ.get("AUTH_SECRET"))
    parser.add_argument(
        "--aud",
        action="append",
        choices=ALL_SERVICES,
        help="a service the token is for (repeatable); defaults to the role's audiences",
    )
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
            audience=args.aud,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
