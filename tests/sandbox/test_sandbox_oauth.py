"""The token endpoint and bearer checks: rotation, one-time codes, expiry and revocation."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions

pytestmark = pytest.mark.anyio


async def _token(
    session: aiohttp.ClientSession, sandbox: Sandbox, form: dict[str, str], *, basic: bool = True
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    headers = {}
    if basic:
        headers["Authorization"] = _basic(sandbox.options.client_id, sandbox.options.client_secret)
    else:
        form = {
            **form,
            "client_id": sandbox.options.client_id,
            "client_secret": sandbox.options.client_secret,
        }
    async with session.post(sandbox.token_url, data=form, headers=headers) as response:
        return response.status, await response.json(), response


def _basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


async def _refresh(
    session: aiohttp.ClientSession, sandbox: Sandbox, token: str, *, basic: bool = True
) -> tuple[int, dict[str, Any]]:
    status, body, _ = await _token(
        session, sandbox, {"grant_type": "refresh_token", "refresh_token": token}, basic=basic
    )
    return status, body


async def _company_info(session: aiohttp.ClientSession, sandbox: Sandbox, access: str) -> int:
    realm = sandbox.options.realm_ids[0]
    url = f"{sandbox.base_url}/v3/company/{realm}/companyinfo/{realm}?minorversion=75"
    async with session.get(url, headers={"Authorization": f"Bearer {access}"}) as response:
        return response.status


INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "Incorrect or invalid refresh token",
}


async def test_refresh_rotates_and_a_superseded_token_is_refused(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        first = sandbox.refresh_token()
        status, body, response = await _token(
            session, sandbox, {"grant_type": "refresh_token", "refresh_token": first}
        )
        assert status == 200
        assert response.headers["intuit_tid"]
        assert body["token_type"] == "bearer" and body["expires_in"] == 3600
        assert body["x_refresh_token_expires_in"] == 8726400
        second = body["refresh_token"]
        assert second != first
        # Until the new token is used, the old one still answers, with that same new token.
        assert (await _refresh(session, sandbox, first))[1]["refresh_token"] == second
        status, body = await _refresh(session, sandbox, second, basic=False)
        assert status == 200 and body["refresh_token"] not in (first, second)
        assert await _refresh(session, sandbox, first) == (400, INVALID_GRANT)
        assert sandbox.stats()["refresh_tokens"] == {
            sandbox.options.realm_ids[0]: [body["refresh_token"]]
        }


async def test_without_grace_the_old_token_dies_at_once(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options(refresh_grace=0)) as sandbox, aiohttp.ClientSession() as session:
        first = sandbox.refresh_token()
        assert (await _refresh(session, sandbox, first))[0] == 200
        assert await _refresh(session, sandbox, first) == (400, INVALID_GRANT)


async def test_bad_client_and_bad_grant_type(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        form = {"grant_type": "refresh_token", "refresh_token": sandbox.refresh_token()}
        wrong = {"Authorization": _basic(sandbox.options.client_id, "wrong")}
        async with session.post(sandbox.token_url, data=form, headers=wrong) as response:
            assert response.status == 401
            assert await response.json() == {"error": "invalid_client"}
            assert response.headers["intuit_tid"]
        async with session.post(sandbox.token_url, data=form) as response:
            assert response.status == 401
        status, body, _ = await _token(session, sandbox, {"grant_type": "password"})
        assert (status, body) == (400, {"error": "unsupported_grant_type"})


async def test_authorization_code_is_accepted_once(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        form = {
            "grant_type": "authorization_code",
            "code": sandbox.options.auth_code,
            "redirect_uri": "https://example.com/callback",
        }
        status, tokens, _ = await _token(session, sandbox, form)
        assert status == 200 and tokens["access_token"] and tokens["refresh_token"]
        assert await _company_info(session, sandbox, tokens["access_token"]) == 200
        status, body, _ = await _token(session, sandbox, form)
        assert status == 400 and body["error"] == "invalid_grant"
        # Re-using a code also cuts off the tokens it gave.
        assert (await _refresh(session, sandbox, tokens["refresh_token"]))[0] == 400


async def test_expired_and_revoked_tokens(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        status, body = await _refresh(session, sandbox, sandbox.refresh_token())
        assert await _company_info(session, sandbox, body["access_token"]) == 200
        sandbox.set_faults(expire_tokens=True)
        assert await _company_info(session, sandbox, body["access_token"]) == 401
        status, body = await _refresh(session, sandbox, body["refresh_token"])
        assert status == 200
        assert await _company_info(session, sandbox, body["access_token"]) == 200
        async with session.post(
            f"{sandbox.base_url}/_sandbox/faults",
            json={"revoke": sandbox.options.realm_ids[0]},
        ) as response:
            assert response.status == 200
        assert await _company_info(session, sandbox, body["access_token"]) == 401
        assert await _refresh(session, sandbox, body["refresh_token"]) == (400, INVALID_GRANT)
        # A new connection works again.
        fresh = sandbox.connect()["refresh_token"]
        assert (await _refresh(session, sandbox, fresh))[0] == 200


async def test_access_tokens_expire_after_their_lifetime(
    options: Callable[..., SandboxOptions],
) -> None:
    settings = options(access_token_lifetime=0)
    async with Sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        status, body = await _refresh(session, sandbox, sandbox.refresh_token())
        assert status == 200 and body["expires_in"] == 1
        assert await _company_info(session, sandbox, body["access_token"]) == 401


async def test_unauthorized_bodies_are_quickbooks_shapes(
    options: Callable[..., SandboxOptions],
) -> None:
    realms = ("111", "222")
    async with Sandbox(options(realm_ids=realms)) as sandbox, aiohttp.ClientSession() as session:
        url = f"{sandbox.base_url}/v3/company/111/query?query=select * from Invoice"
        async with session.get(url) as response:
            assert response.status == 401
            assert response.headers["intuit_tid"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            fault = (await response.json())["fault"]
            assert fault["type"] == "AUTHENTICATION" and fault["error"][0]["code"] == "3200"
        assert sandbox.refresh_token("222") == "sandbox-refresh-token-222"
        _, body = await _refresh(session, sandbox, sandbox.refresh_token("222"))
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 403
            assert "AuthorizationFailed" in (await response.json())["Fault"]["Error"][0]["Message"]
