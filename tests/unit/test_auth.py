"""Bearer tokens and roles."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import Principal, Role, main, mint_token, require_roles, verify_token
from shared.errors import ApiError, install_error_handlers
from shared.settings import ServiceSettings

SECRET = "unit-test-secret-0123456789abcdef"


def test_a_token_names_its_role_and_subject() -> None:
    token = mint_token(secret=SECRET, role=Role.RESPONDER, subject="r-1")
    assert verify_token(token, secret=SECRET) == Principal(Role.RESPONDER, "r-1")


@pytest.mark.parametrize(
    "token",
    [
        mint_token(secret="another-secret-0123456789abcdef-xyz", role="dispatcher", subject="x"),
        mint_token(secret=SECRET, role="dispatcher", subject="x", ttl=timedelta(seconds=-1)),
        "not-a-token",
    ],
)
def test_forged_expired_or_garbled_tokens_are_refused(token: str) -> None:
    with pytest.raises(ApiError) as caught:
        verify_token(token, secret=SECRET)
    assert caught.value.status == 401


async def test_roles_gate_routes() -> None:
    app = FastAPI()
    app.state.settings = ServiceSettings(auth_secret=SECRET)
    install_error_handlers(app)

    @app.get("/desk")
    async def desk(p: Principal = Depends(require_roles(Role.DISPATCHER))) -> dict[str, str]:
        return {"who": p.subject}

    dispatcher = mint_token(secret=SECRET, role=Role.DISPATCHER, subject="desk-7")
    reporter = mint_token(secret=SECRET, role=Role.REPORTER, subject="r")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        ok = await client.get("/desk", headers={"authorization": f"Bearer {dispatcher}"})
        query_token = await client.get("/desk", params={"access_token": dispatcher})
        wrong_role = await client.get("/desk", headers={"authorization": f"Bearer {reporter}"})
        none = await client.get("/desk")
    assert ok.json() == {"who": "desk-7"}
    assert query_token.status_code == 200
    assert wrong_role.status_code == 403
    assert wrong_role.json()["error"]["code"] == "forbidden"
    assert none.status_code == 401


def test_the_cli_mints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--role", "operator", "--sub", "ops-1", "--secret", SECRET]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(token, secret=SECRET) == Principal(Role.OPERATOR, "ops-1")
