"""Token refresh against the sandbox's OAuth endpoint: rotation, saving before use, one refresh."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web
from qbo_events.errors import (
    NeedsReauthorization,
    QuickBooksAuthError,
    QuickBooksRateLimited,
    QuickBooksUnavailable,
)
from qbo_events.quickbooks.oauth import Tokens, exchange_code

ONE = "SELECT * FROM Customer MAXRESULTS 1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def saved_before_used(log: list[tuple[str, str]]) -> None:
    """Every access token the client sent was in the store before its first use."""
    saved: set[str] = set()
    for action, token in log:
        if action == "save":
            saved.add(token)
        else:
            assert token in saved, f"an access token was used before it was saved: {log}"


@contextlib.asynccontextmanager
async def token_endpoint(
    status: int, text: str, headers: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """A token endpoint on 127.0.0.1 that answers every request alike; yields its URL."""

    async def respond(_: web.Request) -> web.Response:
        return web.Response(status=status, text=text, headers=headers)

    app = web.Application()
    app.router.add_post("/token", respond)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.anyio
async def test_first_start_uses_the_configured_token_and_saves_the_rotation_first(
    qbo, store, log, make_manager
) -> None:
    q = await qbo()
    initial = q.sandbox.refresh_token()
    await q.client.query(q.realm, q.tokens, ONE)

    saved = store.tokens["acme"]
    assert saved.refresh_token != initial  # rotated, and the rotation is what was kept
    assert [saved.refresh_token] == q.sandbox.stats()["refresh_tokens"][q.realm]
    assert log == [("save", saved.access_token), ("use", saved.access_token)]
    assert saved.access_expires_at > time.time() + 3000
    assert saved.refresh_expires_at > time.time() + 86400

    # Thereafter the stored tokens win over the configured one, which may be long dead.
    again = make_manager(q.sandbox, initial_refresh_token="stale-from-config")
    assert await again.access_token() == saved.access_token
    assert q.sandbox.stats()["token_refreshes"] == 1
    assert await again.refresh() != saved.access_token
    assert store.tokens["acme"].refresh_token != saved.refresh_token


@pytest.mark.anyio
async def test_after_a_401_the_new_tokens_are_saved_before_the_retry(qbo, store, log) -> None:
    q = await qbo()
    await q.client.query(q.realm, q.tokens, ONE)
    first = store.tokens["acme"].access_token
    q.sandbox.set_faults(expire_tokens=True)

    await q.client.query(q.realm, q.tokens, ONE)

    second = store.tokens["acme"].access_token
    assert second != first
    assert log[2:] == [("use", first), ("save", second), ("use", second)]
    saved_before_used(log)
    assert q.client.calls == {"200": 2, "401": 1}


@pytest.mark.anyio
async def test_twenty_concurrent_401s_make_one_refresh(qbo, store, log) -> None:
    fast = {"requests_per_minute": 10_000, "requests_per_second": 1000}
    q = await qbo(
        max_per_second=1000, max_per_minute=10_000, client={"max_concurrent_requests": 20, **fast}
    )
    await q.client.query(q.realm, q.tokens, ONE)
    q.sandbox.set_faults(expire_tokens=True)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(q.client.query, q.realm, q.tokens, ONE)

    assert q.sandbox.stats()["token_refreshes"] == 2
    assert q.tokens.refreshes == 2
    assert q.client.calls["200"] == 21
    assert 1 <= q.client.calls["401"] <= 20
    saved_before_used(log)


@pytest.mark.anyio
async def test_refreshes_ahead_of_expiry_without_waiting_for_a_401(
    qbo, store, make_manager
) -> None:
    q = await qbo()
    skew = 0.0
    tokens = make_manager(q.sandbox, clock=lambda: time.time() + skew)
    first = await tokens.access_token()
    assert await tokens.access_token() == first

    skew = tokens.expires_at - time.time() - 299  # inside the last five minutes
    second = await tokens.access_token()

    assert second != first
    assert store.tokens["acme"].access_token == second
    assert q.sandbox.stats()["token_refreshes"] == 2


@pytest.mark.anyio
async def test_invalid_grant_needs_reauthorization_until_a_new_token_is_stored(qbo, store) -> None:
    q = await qbo()
    await q.client.query(q.realm, q.tokens, ONE)
    q.sandbox.set_faults(revoke=True)

    with pytest.raises(NeedsReauthorization) as caught:
        await q.client.query(q.realm, q.tokens, ONE)
    assert q.tokens.needs_reauthorization
    assert q.tokens.stats()["needs_reauthorization"] is True
    assert caught.value.status == 400
    assert caught.value.intuit_tid

    # No further calls to the token endpoint (nor the API) until someone connects the company.
    with pytest.raises(NeedsReauthorization):
        await q.client.query(q.realm, q.tokens, ONE)
    assert q.sandbox.stats()["requests"]["token 400"] == 1

    secrets = [store.tokens["acme"].refresh_token, store.tokens["acme"].access_token]
    shown = f"{caught.value} {q.tokens.stats()} {q.tokens!r} {q.client.stats()}"
    assert not any(secret in shown for secret in secrets)

    # `qbo-events authorize` stores the new connection's token; the manager picks it up.
    connection = q.sandbox.connect()
    await store.save_tokens("acme", Tokens(refresh_token=connection["refresh_token"]))
    answer = await q.client.query(q.realm, q.tokens, ONE)
    assert answer["QueryResponse"]["Customer"]
    assert not q.tokens.needs_reauthorization


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_lose_the_rotated_token(qbo, store, make_manager) -> None:
    q = await qbo()
    saving, release = asyncio.Event(), asyncio.Event()

    class SlowStore(type(store)):  # type: ignore[misc]
        async def save_tokens(self, instance: str, tokens: Tokens) -> None:
            saving.set()
            await release.wait()
            await super().save_tokens(instance, tokens)

    slow = SlowStore([])
    tokens = make_manager(q.sandbox, store=slow)
    caller = asyncio.ensure_future(tokens.access_token())
    with anyio.fail_after(5):
        await saving.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller

    release.set()
    # The next caller waits for the rotation already under way instead of starting another.
    with anyio.fail_after(5):
        token = await tokens.access_token()
    assert slow.tokens["acme"].access_token == token
    assert q.sandbox.stats()["token_refreshes"] == 1


@pytest.mark.anyio
async def test_exchange_code(qbo, http) -> None:
    q = await qbo()
    options = q.sandbox.options
    common = {"token_url": q.sandbox.token_url, "redirect_uri": "http://127.0.0.1/callback"}
    client = {"client_id": options.client_id, "client_secret": options.client_secret}

    with pytest.raises(QuickBooksAuthError, match="invalid_client") as refused:
        await exchange_code(
            http, **common, client_id=options.client_id, client_secret="wrong", code="x"
        )
    assert "wrong" not in str(refused.value)

    tokens = await exchange_code(http, **common, **client, code=options.auth_code)
    assert tokens.refresh_token and tokens.access_token
    assert tokens.access_expires_at > time.time() + 3000

    # A code works once; QuickBooks answers a second exchange with invalid_grant.
    with pytest.raises(NeedsReauthorization):
        await exchange_code(http, **common, **client, code=options.auth_code)


@pytest.mark.anyio
async def test_unreachable_token_endpoint_is_unavailable(qbo, make_manager) -> None:
    q = await qbo()
    url = f"http://127.0.0.1:{closed_port()}/oauth2/v1/tokens/bearer"
    tokens = make_manager(q.sandbox, token_url=url)
    with pytest.raises(QuickBooksUnavailable) as caught:
        await tokens.access_token()
    assert q.sandbox.refresh_token() not in str(caught.value)
    assert not tokens.needs_reauthorization
    assert tokens.stats()["refresh_failures"] == 1


@pytest.mark.anyio
async def test_a_failing_token_endpoint_is_unavailable_not_a_reconnect(qbo, make_manager) -> None:
    """A 5xx from a proxy in front of the token endpoint is worth a retry, not a reconnect."""

    async with token_endpoint(502, "<html>Bad gateway</html>") as url:
        q = await qbo()
        tokens = make_manager(q.sandbox, token_url=url)
        with pytest.raises(QuickBooksUnavailable) as caught:
            await tokens.access_token()
        assert caught.value.status == 502
        assert not tokens.needs_reauthorization


@pytest.mark.anyio
async def test_never_connected_needs_authorization(qbo, store, make_manager) -> None:
    q = await qbo()
    tokens = make_manager(q.sandbox, initial_refresh_token="")
    with pytest.raises(NeedsReauthorization):
        await tokens.access_token()
    assert tokens.needs_reauthorization
    assert q.sandbox.stats()["token_refreshes"] == 0

    connection = q.sandbox.connect()
    await store.save_tokens("acme", Tokens(refresh_token=connection["refresh_token"]))
    assert await tokens.access_token()
    assert not tokens.needs_reauthorization


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("1e400", 0.0, 86400.0),  # float() reads this as infinity: the realm would never poll again
        ("inf", 0.0, 86400.0),
        ("Wed, 21 Oct 2065 07:28:00 GMT", 0.0, 86400.0),  # a date, far ahead: capped
        ("in 600 s", 500.0, 600.0),  # an HTTP-date ten minutes ahead, made when the test runs
        ("7", 7.0, 7.0),
    ],
)
async def test_a_throttling_token_endpoint_is_waited_out_for_a_bounded_time(
    qbo, make_manager, header: str, low: float, high: float
) -> None:
    if header == "in 600 s":
        header = email.utils.formatdate(time.time() + 600, usegmt=True)

    async with token_endpoint(429, "{}", {"Retry-After": header}) as url:
        q = await qbo()
        tokens = make_manager(q.sandbox, token_url=url)
        with pytest.raises(QuickBooksRateLimited) as caught:
            await tokens.access_token()
        assert low <= caught.value.retry_after <= high
