"""Bearer tokens: roles, audiences, revocation, query tokens and stream caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI

from shared.auth import (
    DISPATCH,
    INTAKE,
    LOCATOR,
    NOTIFICATION,
    Principal,
    Role,
    StreamPrincipal,
    main,
    mint_token,
    require_roles,
    verify_token,
)
from shared.errors import ApiError, Unauthenticated, install_error_handlers
from shared.settings import ServiceSettings
from shared.streams import StreamLimiter

SECRET = "unit-test-secret-0123456789abcdef"


def test_a_token_names_its_role_and_subject() -> None:
    token = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r-1")
    assert verify_token(token, secret=SECRET, audience=LOCATOR) == Principal(Role.RESPONDER, "r-1")


@pytest.mark.parametrize(
    "token",
    [
        mint_token(secret="another-secret-0123456789abcdef-xyz", role="dispatcher", subject="x"),
        mint_token(secret=SECRET, role="dispatcher", subject="x", ttl=timedelta(seconds=-60)),
        "not-a-token",
    ],
)
def test_forged_expired_or_garbled_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        verify_token(token, secret=SECRET, audience=DISPATCH)
    assert caught.value.code == "unauthorized"


@pytest.mark.parametrize(
    ("role", "good_at", "refused_at"),
    [
        (Role.RESPONDER, (LOCATOR, DISPATCH, NOTIFICATION), (INTAKE,)),
        (Role.REPORTER, (INTAKE, NOTIFICATION), (LOCATOR, DISPATCH)),
        (Role.DISPATCHER, (INTAKE, DISPATCH, LOCATOR, NOTIFICATION), ()),
    ],
)
def test_a_token_is_good_only_at_the_services_it_names(
    role: Role, good_at: tuple[str, ...], refused_at: tuple[str, ...]
) -> None:
    token = mint_token(secret=SECRET, role=role, subject="s")
    for service in good_at:
        assert verify_token(token, secret=SECRET, audience=service).role is role
    for service in refused_at:
        with pytest.raises(Unauthenticated) as caught:
            verify_token(token, secret=SECRET, audience=service)
        assert caught.value.code == "unauthorized"


def test_a_service_token_minted_for_the_locator_is_refused_elsewhere() -> None:
    token = mint_token(secret=SECRET, role=Role.SERVICE, subject="dispatch", audience=(LOCATOR,))
    assert verify_token(token, secret=SECRET, audience=LOCATOR).subject == "dispatch"
    with pytest.raises(Unauthenticated):
        verify_token(token, secret=SECRET, audience=NOTIFICATION)


def test_a_token_without_an_audience_is_refused() -> None:
    now = datetime.now(UTC)
    claims = {
        "iss": "quick-response-dispatch",
        "sub": "x",
        "role": "dispatcher",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    with pytest.raises(Unauthenticated):
        verify_token(jwt.encode(claims, SECRET, algorithm="HS256"), secret=SECRET, audience=INTAKE)


def test_issued_at_keeps_milliseconds() -> None:
    at = datetime(2030, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    token = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r", issued_at=at)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == pytest.approx(at.timestamp())


class FakeRevocations:
    """Revoked responders and when (unix seconds)."""

    def __init__(self) -> None:
        self.revoked: dict[str, float] = {}

    def is_revoked(self, responder_id: str, issued_at: float) -> bool:
        at = self.revoked.get(responder_id)
        return at is not None and issued_at <= at


def _app(*, service: str = DISPATCH) -> tuple[FastAPI, FakeRevocations]:
    app = FastAPI()
    app.state.settings = ServiceSettings(auth_secret=SECRET, service_name=service)
    app.state.stream_limiter = StreamLimiter(max_per_caller=2, retry_after_s=7)
    revocations = FakeRevocations()
    app.state.revocations = revocations
    install_error_handlers(app)

    @app.get("/desk")
    async def desk(p: Principal = Depends(require_roles(Role.DISPATCHER))) -> dict[str, str]:
        return {"who": p.subject}

    @app.get("/me")
    async def me(p: Principal = Depends(require_roles(Role.RESPONDER))) -> dict[str, str]:
        return {"who": p.subject}

    @app.get("/stream")
    async def stream(p: StreamPrincipal) -> dict[str, str]:
        return {"who": p.subject}

    return app, revocations


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_roles_gate_routes() -> None:
    app, _ = _app()
    dispatcher = mint_token(secret=SECRET, role=Role.DISPATCHER, subject="desk-7")
    reporter = mint_token(secret=SECRET, role=Role.REPORTER, subject="r", audience=(DISPATCH,))
    async with _client(app) as client:
        ok = await client.get("/desk", headers=_bearer(dispatcher))
        wrong_role = await client.get("/desk", headers=_bearer(reporter))
        none = await client.get("/desk")
    assert ok.json() == {"who": "desk-7"}
    assert wrong_role.status_code == 403
    assert wrong_role.json()["error"]["code"] == "forbidden"
    assert none.status_code == 401


async def test_a_token_in_the_query_works_on_streams_only() -> None:
    app, _ = _app()
    dispatcher = mint_token(secret=SECRET, role=Role.DISPATCHER, subject="desk-7")
    async with _client(app) as client:
        on_stream = await client.get("/stream", params={"access_token": dispatcher})
        elsewhere = await client.get("/desk", params={"access_token": dispatcher})
        elsewhere_too = await client.get(
            "/desk", params={"access_token": dispatcher}, headers=_bearer(dispatcher)
        )
    assert on_stream.json() == {"who": "desk-7"}
    assert elsewhere.status_code == 401
    assert elsewhere_too.status_code == 401


async def test_a_revoked_responders_older_tokens_are_refused_and_newer_ones_work() -> None:
    app, revocations = _app()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    old = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r-1", issued_at=t0)
    other = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r-2", issued_at=t0)
    revocations.revoked["r-1"] = (t0 + timedelta(seconds=1)).timestamp()
    new = mint_token(
        secret=SECRET, role=Role.RESPONDER, subject="r-1", issued_at=t0 + timedelta(seconds=2)
    )
    async with _client(app) as client:
        refused = await client.get("/me", headers=_bearer(old))
        refused_stream = await client.get("/stream", params={"access_token": old})
        fresh = await client.get("/me", headers=_bearer(new))
        untouched = await client.get("/me", headers=_bearer(other))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"
    assert refused_stream.status_code == 401
    assert fresh.json() == {"who": "r-1"}
    assert untouched.json() == {"who": "r-2"}


async def test_a_service_refuses_a_token_not_meant_for_it() -> None:
    app, _ = _app(service=INTAKE)
    responder = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r-1")
    async with _client(app) as client:
        answer = await client.get("/me", headers=_bearer(responder))
    assert answer.status_code == 401


async def test_streams_are_capped_per_caller_and_revocation_ends_them() -> None:
    limiter = StreamLimiter(max_per_caller=2, retry_after_s=7)
    alice = Principal(Role.RESPONDER, "a", issued_at=100.0)
    first, second = limiter.acquire(alice), limiter.acquire(alice)
    with pytest.raises(ApiError) as caught:
        limiter.acquire(alice)
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "7"}
    limiter.acquire(Principal(Role.RESPONDER, "b"))  # another caller is not affected
    first.release()
    first.release()  # idempotent
    third = limiter.acquire(alice)
    assert limiter.open_for(alice) == 2
    assert limiter.end_streams("responder:a", issued_up_to=99.0) == 0
    assert limiter.end_streams("responder:a", issued_up_to=100.0) == 2
    assert second.ended.is_set()
    assert third.ended.is_set()


def test_the_cli_mints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--role", "operator", "--sub", "ops-1", "--secret", SECRET]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(token, secret=SECRET, audience=NOTIFICATION) == Principal(
        Role.OPERATOR, "ops-1"
    )


def test_the_cli_narrows_the_audience(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--role", "service", "--aud", "volunteer-locator", "--secret", SECRET]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(token, secret=SECRET, audience=LOCATOR).role is Role.SERVICE
    with pytest.raises(Unauthenticated):
        verify_token(token, secret=SECRET, audience=DISPATCH)
