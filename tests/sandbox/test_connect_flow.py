"""The connect flow as the sandbox plays Intuit: consent page, revoke, hard expiry, disconnect."""

from __future__ import annotations

import argparse
import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from qbo_events.sandbox import Sandbox, SandboxOptions, add_arguments
from qbo_events.sandbox.command import options_from
from yarl import URL

pytestmark = pytest.mark.anyio

REALMS = ("1111", "2222")
SCOPE = "com.intuit.quickbooks.accounting openid"
HARD_HEADER = {"x-include-refresh-token-hard-expires-in": "true"}


class Redirects:
    """The app's redirect handler: a real listener that keeps the query of every redirect."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        return web.Response(text="connected")


@pytest.fixture
async def redirects() -> AsyncIterator[Redirects]:
    receiver = Redirects()
    app = web.Application()
    app.router.add_get("/oauth/callback", receiver._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/oauth/callback"
    yield receiver
    await runner.cleanup()


def _basic(sandbox: Sandbox) -> dict[str, str]:
    pair = f"{sandbox.options.client_id}:{sandbox.options.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _authorize_params(
    sandbox: Sandbox, redirect_uri: str, changes: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Intuit's parameters; `changes` replaces some, and a None leaves one out."""
    params: dict[str, str | None] = {
        "client_id": sandbox.options.client_id,
        "scope": SCOPE,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "state": "st-123",
        **(changes or {}),
    }
    return {k: v for k, v in params.items() if v is not None}


async def _authorize(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    redirect_uri: str,
    changes: dict[str, str | None] | None = None,
) -> aiohttp.ClientResponse:
    """One authorization, not followed: the sandbox's own answer."""
    params = _authorize_params(sandbox, redirect_uri, changes)
    async with session.get(sandbox.authorize_url, params=params, allow_redirects=False) as r:
        await r.read()
        return r


def _redirect_query(response: aiohttp.ClientResponse) -> dict[str, str]:
    assert response.status == 302
    return dict(URL(response.headers["Location"]).query)


async def _token(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    all_headers = {**_basic(sandbox), **(headers or {})}
    async with session.post(sandbox.token_url, data=form, headers=all_headers) as response:
        return response.status, await response.json()


async def _exchange(
    session: aiohttp.ClientSession, sandbox: Sandbox, code: str, redirect_uri: str
) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    status, body = await _token(session, sandbox, form)
    assert status == 200, body
    return body


async def _refresh(
    session: aiohttp.ClientSession, sandbox: Sandbox, token: str, *, hard: bool = False
) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return await _token(session, sandbox, form, HARD_HEADER if hard else None)


async def _company_name(
    session: aiohttp.ClientSession, sandbox: Sandbox, realm: str, access: str
) -> tuple[int, str | None]:
    url = f"{sandbox.base_url}/v3/company/{realm}/companyinfo/{realm}?minorversion=75"
    async with session.get(url, headers={"Authorization": f"Bearer {access}"}) as response:
        body = await response.json()
        return response.status, body.get("CompanyInfo", {}).get("CompanyName")


async def _control(
    session: aiohttp.ClientSession, sandbox: Sandbox, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    url = f"{sandbox.base_url}/_sandbox/{path}"
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def _revoke(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    token: str,
    *,
    path: str = "/v2/oauth2/tokens/revoke",
    as_form: bool = False,
    headers: dict[str, str] | None = None,
) -> int:
    body: dict[str, Any] = {"data": {"token": token}} if as_form else {"json": {"token": token}}
    url = sandbox.base_url + path
    auth = _basic(sandbox) if headers is None else headers
    async with session.post(url, headers={"Accept": "application/json", **auth}, **body) as r:
        await r.read()
        return r.status


async def test_a_browser_is_sent_back_with_a_code_that_works(
    options: Callable[..., SandboxOptions], redirects: Redirects
) -> None:
    async with Sandbox(options(realm_ids=REALMS)) as sandbox, aiohttp.ClientSession() as session:
        params = _authorize_params(sandbox, redirects.url)
        async with session.get(sandbox.authorize_url, params=params) as response:
            assert response.status == 200 and await response.text() == "connected"
        [query] = redirects.queries
        assert query["state"] == "st-123" and query["realmId"] == REALMS[0]
        tokens = await _exchange(session, sandbox, query["code"], redirects.url)
        assert await _company_name(session, sandbox, REALMS[0], tokens["access_token"]) == (
            200,
            f"Sandbox Company {REALMS[0]}",
        )
        assert (await _refresh(session, sandbox, tokens["refresh_token"]))[0] == 200
        status, log = await _control(session, sandbox, "GET", "authorizations")
        assert status == 200
        [entry] = log["authorizations"]
        assert entry["realm_id"] == REALMS[0] and entry["decision"] == "approve"
        assert entry["redirect_uri"] == redirects.url and entry["state"] == "st-123"
        assert sandbox.stats()["authorizations"] == 1


async def test_deny_and_choosing_another_company(options: Callable[..., SandboxOptions]) -> None:
    back = "http://127.0.0.1:9/cb?keep=1"
    async with Sandbox(options(realm_ids=REALMS)) as sandbox, aiohttp.ClientSession() as session:
        status, consent = await _control(session, sandbox, "GET", "consent")
        assert consent == {"decision": "approve", "realm_id": REALMS[0], "once": None}

        assert (await _control(session, sandbox, "POST", "consent", {"decision": "deny"}))[0] == 200
        query = _redirect_query(await _authorize(session, sandbox, back))
        assert query == {"keep": "1", "error": "access_denied", "state": "st-123"}

        wanted = {"decision": "approve", "realm_id": REALMS[1]}
        assert (await _control(session, sandbox, "POST", "consent", wanted))[0] == 200
        query = _redirect_query(await _authorize(session, sandbox, back))
        assert query["realmId"] == REALMS[1] and query["keep"] == "1"
        tokens = await _exchange(session, sandbox, query["code"], back)
        assert await _company_name(session, sandbox, REALMS[1], tokens["access_token"]) == (
            200,
            f"Sandbox Company {REALMS[1]}",
        )

        # A one-shot answer: a company the sandbox did not know, then the standing answer again.
        once = {"decision": "approve", "realm_id": "3333", "once": True}
        status, consent = await _control(session, sandbox, "POST", "consent", once)
        assert status == 200 and consent["once"] == {"decision": "approve", "realm_id": "3333"}
        first = _redirect_query(await _authorize(session, sandbox, back, {"state": None}))
        assert first["realmId"] == "3333" and "state" not in first
        tokens = await _exchange(session, sandbox, first["code"], back)
        name = await _company_name(session, sandbox, "3333", tokens["access_token"])
        assert name == (200, "Sandbox Company 3333")
        assert _redirect_query(await _authorize(session, sandbox, back))["realmId"] == REALMS[1]

        status, body = await _control(
            session, sandbox, "POST", "consent", {"decision": "approve", "realm_id": "no-such"}
        )
        assert status == 400 and "unknown realm" in body["error"]
        bad = {"decision": "maybe"}
        assert (await _control(session, sandbox, "POST", "consent", bad))[0] == 400
        log = (await _control(session, sandbox, "GET", "authorizations"))[1]["authorizations"]
        assert [(e["decision"], e["realm_id"]) for e in log] == [
            ("deny", REALMS[0]),
            ("approve", REALMS[1]),
            ("approve", "3333"),
            ("approve", REALMS[1]),
        ]


@pytest.mark.parametrize(
    "changes",
    [
        {"client_id": "someone-else"},
        {"client_id": None},
        {"redirect_uri": None},
        {"redirect_uri": "/relative/callback"},
        {"redirect_uri": "ftp://127.0.0.1/cb"},
        {"redirect_uri": "http://127.0.0.1:9/unregistered"},
        {"response_type": "token"},
        {"scope": "openid email"},
        {"scope": None},
    ],
)
async def test_bad_requests_get_an_error_page_and_no_redirect(
    options: Callable[..., SandboxOptions], changes: dict[str, str | None]
) -> None:
    registered = "http://127.0.0.1:9/cb"
    settings = options(redirect_uris=(registered,))
    async with Sandbox(settings) as sandbox, aiohttp.ClientSession() as session:
        response = await _authorize(session, sandbox, registered, changes)
        assert response.status == 400 and "Location" not in response.headers
        assert response.content_type == "text/html"
        assert (await _control(session, sandbox, "GET", "authorizations"))[1] == {
            "authorizations": []
        }
        # The registered URI itself is taken.
        assert (await _authorize(session, sandbox, registered)).status == 302


async def test_revoke_answers_200_once_then_400(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options(realm_ids=REALMS)) as sandbox, aiohttp.ClientSession() as session:
        realm = REALMS[0]
        status, tokens = await _refresh(session, sandbox, sandbox.refresh_token(realm))
        assert status == 200
        # JSON at Intuit's /v2 path, a refresh token: the whole grant ends.
        assert await _revoke(session, sandbox, tokens["refresh_token"]) == 200
        assert await _revoke(session, sandbox, tokens["refresh_token"]) == 400
        status, body = await _refresh(session, sandbox, tokens["refresh_token"])
        assert (status, body["error"]) == (400, "invalid_grant")
        assert (await _company_name(session, sandbox, realm, tokens["access_token"]))[0] == 401

        # A form body at the v1 path, an access token: its refresh token dies with it.
        status, other = await _refresh(session, sandbox, sandbox.refresh_token(REALMS[1]))
        v1 = "/oauth2/v1/tokens/revoke"
        assert await _revoke(session, sandbox, other["access_token"], path=v1, as_form=True) == 200
        assert (await _refresh(session, sandbox, other["refresh_token"]))[0] == 400
        assert await _revoke(session, sandbox, other["access_token"], as_form=True) == 400

        assert await _revoke(session, sandbox, "never-issued") == 400
        assert await _revoke(session, sandbox, "never-issued", headers={}) == 401

        status, log = await _control(session, sandbox, "GET", "revocations")
        assert [(r["realm_id"], r["token_kind"], r["status"]) for r in log["revocations"]] == [
            (realm, "refresh", 200),
            (realm, "refresh", 400),
            (REALMS[1], "access", 200),
            (REALMS[1], "access", 400),
            (None, "unknown", 400),
            (None, "unknown", 401),
        ]
        assert all(r["at"].endswith("Z") for r in log["revocations"])
        of_realm = (await _control(session, sandbox, "GET", f"revocations?realm_id={realm}"))[1]
        assert len(of_realm["revocations"]) == 2
        assert sandbox.stats()["revocations"] == 6


async def test_hard_expiry_is_reported_on_request_and_ends_the_chain(
    options: Callable[..., SandboxOptions],
) -> None:
    async with (
        Sandbox(options(refresh_hard_expiry=5000)) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        status, plain = await _refresh(session, sandbox, sandbox.refresh_token())
        assert status == 200 and "x_refresh_token_hard_expires_in" not in plain
        # The rolling expiry never promises more than the hard one allows.
        assert plain["x_refresh_token_expires_in"] <= 5000
        form = {"grant_type": "refresh_token", "refresh_token": plain["refresh_token"]}
        status, first = await _token(
            session, sandbox, form, {"X-Include-Refresh-Token-Hard-Expires-In": "True"}
        )
        assert status == 200 and 4990 <= first["x_refresh_token_hard_expires_in"] <= 5000

        status, answer = await _control(
            session, sandbox, "POST", "hard_expiry", {"realm_id": sandbox.options.realm_ids[0]}
        )
        assert status == 400 and "seconds" in answer["error"]
        status, answer = await _control(session, sandbox, "POST", "hard_expiry", {"seconds": 1})
        assert status == 200 and answer["chains"] == 1
        assert answer["realm_id"] == sandbox.options.realm_ids[0]

        # Successors inherit the chain's hard expiry; it does not move when they are used.
        status, body = await _refresh(session, sandbox, first["refresh_token"], hard=True)
        assert status == 200 and body["x_refresh_token_hard_expires_in"] <= 1
        assert body["x_refresh_token_expires_in"] <= 1
        token = body["refresh_token"]
        async with asyncio.timeout(5):
            while True:
                status, body = await _refresh(session, sandbox, token, hard=True)
                if status != 200:
                    break
                assert body["x_refresh_token_hard_expires_in"] <= 1
                token = body["refresh_token"]
                await asyncio.sleep(0.05)
        assert body == {"error_description": "Refresh token has expired", "error": "invalid_grant"}

        # A new grant starts a new chain with the full hard lifetime.
        fresh = sandbox.connect()["refresh_token"]
        status, body = await _refresh(session, sandbox, fresh, hard=True)
        assert status == 200 and body["x_refresh_token_hard_expires_in"] > 4000
        stats = sandbox.stats()["refresh_token_hard_expires_in"]
        assert stats[sandbox.options.realm_ids[0]][0] > 4000


async def test_hard_expiry_of_zero_ends_every_chain_of_the_realm_at_once(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options(realm_ids=REALMS)) as sandbox, aiohttp.ClientSession() as session:
        wanted = {"realm_id": REALMS[0], "seconds": 0}
        assert (await _control(session, sandbox, "POST", "hard_expiry", wanted))[0] == 200
        status, body = await _refresh(session, sandbox, sandbox.refresh_token(REALMS[0]))
        assert (status, body["error"]) == (400, "invalid_grant")
        assert (await _refresh(session, sandbox, sandbox.refresh_token(REALMS[1])))[0] == 200
        unknown = {"realm_id": "9999", "seconds": 5}
        assert (await _control(session, sandbox, "POST", "hard_expiry", unknown))[0] == 400


def test_the_hard_expiry_option_is_a_command_argument() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from(parser.parse_args([])).refresh_hard_expiry == 157_680_000
    args = parser.parse_args(["--refresh-hard-expiry", "60", "--redirect-uri", "http://a/cb"])
    options = options_from(args)
    assert options.refresh_hard_expiry == 60 and options.redirect_uris == ("http://a/cb",)
    with pytest.raises(ValueError, match="--refresh-hard-expiry"):
        options_from(parser.parse_args(["--refresh-hard-expiry", "0"]))


async def test_disconnect_kills_one_realm_and_a_new_connect_restores_it(
    options: Callable[..., SandboxOptions],
) -> None:
    back = "http://127.0.0.1:9/cb"
    async with Sandbox(options(realm_ids=REALMS)) as sandbox, aiohttp.ClientSession() as session:
        held: dict[str, dict[str, Any]] = {}
        for realm in REALMS:
            status, held[realm] = await _refresh(session, sandbox, sandbox.refresh_token(realm))
            assert status == 200
        status, answer = await _control(
            session, sandbox, "POST", "disconnect", {"realm_id": REALMS[0]}
        )
        assert status == 200 and answer["realm_id"] == REALMS[0]
        assert answer["refresh_tokens_revoked"] >= 1 and answer["access_tokens_revoked"] == 1
        a, b = held[REALMS[0]], held[REALMS[1]]
        assert (await _company_name(session, sandbox, REALMS[0], a["access_token"]))[0] == 401
        status, body = await _refresh(session, sandbox, a["refresh_token"])
        assert (status, body["error"]) == (400, "invalid_grant")
        assert (await _company_name(session, sandbox, REALMS[1], b["access_token"]))[0] == 200
        assert (await _refresh(session, sandbox, b["refresh_token"]))[0] == 200
        # Revoking what the user already disconnected is the 400 Intuit gives.
        assert await _revoke(session, sandbox, a["refresh_token"]) == 400

        query = _redirect_query(await _authorize(session, sandbox, back))
        assert query["realmId"] == REALMS[0]
        tokens = await _exchange(session, sandbox, query["code"], back)
        assert (await _company_name(session, sandbox, REALMS[0], tokens["access_token"]))[0] == 200
        assert (await _refresh(session, sandbox, tokens["refresh_token"]))[0] == 200

        unknown = {"realm_id": "9999"}
        assert (await _control(session, sandbox, "POST", "disconnect", unknown))[0] == 400
