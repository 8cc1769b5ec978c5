"""The API client against the sandbox: Query, CDC, read, Faults, 401, 429, 5xx and the limits."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest
from qbo_events.errors import (
    QuickBooksAuthError,
    QuickBooksFault,
    QuickBooksRateLimited,
    QuickBooksUnavailable,
)
from qbo_events.quickbooks.client import QuickBooksClient

ONE = "SELECT * FROM Customer MAXRESULTS 1"
FAST = {"requests_per_minute": 10_000, "requests_per_second": 1000}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ids(cdc: dict, entity: str) -> set[str]:
    blocks = cdc["CDCResponse"][0]["QueryResponse"]
    return {obj["Id"] for block in blocks for obj in block.get(entity, ())}


@pytest.mark.anyio
async def test_cdc_with_an_explicit_offset_returns_the_created_objects(qbo, wire) -> None:
    q = await qbo()
    before = datetime.now(UTC) - timedelta(minutes=5)
    made = {change.object_id for change in q.sandbox.make_changes("Customer", "Create", 3)}

    answer = await q.client.cdc(q.realm, q.tokens, ["Customer"], before)
    assert ids(answer, "Customer") == made
    assert "changedSince=" + before.strftime("%Y-%m-%dT%H") + "%3A" in wire.urls[-1]
    assert "%2B00%3A00" in wire.urls[-1]

    # An offset east of UTC has a `+`, which must reach QuickBooks as a plus, not a space.
    kolkata = before.astimezone(timezone(timedelta(hours=5, minutes=30)))
    answer = await q.client.cdc(q.realm, q.tokens, ["Customer", "Invoice"], kolkata)
    assert ids(answer, "Customer") == made
    assert "entities=Customer,Invoice" in wire.urls[-1]
    assert "%2B05%3A30" in wire.urls[-1]
    assert all("minorversion=75" in url for url in wire.urls)

    later = datetime.now(UTC) + timedelta(minutes=5)
    assert ids(await q.client.cdc(q.realm, q.tokens, ["Customer"], later), "Customer") == set()


@pytest.mark.anyio
async def test_query_and_read(qbo) -> None:
    q = await qbo()
    [change] = q.sandbox.make_changes("Invoice", "Create")
    statement = f"SELECT * FROM Invoice WHERE Id = '{change.object_id}'"

    found = await q.client.query(q.realm, q.tokens, statement)
    [invoice] = found["QueryResponse"]["Invoice"]
    assert invoice["Id"] == change.object_id

    read = await q.client.read(q.realm, q.tokens, "Invoice", change.object_id)
    assert read["Invoice"] == invoice

    with pytest.raises(QuickBooksFault) as missing:
        await q.client.read(q.realm, q.tokens, "Invoice", "no-such-id")
    assert missing.value.code == "610"


@pytest.mark.anyio
async def test_faults_are_parsed_into_our_error(qbo, store) -> None:
    q = await qbo()
    with pytest.raises(QuickBooksFault) as with_or:
        await q.client.query(q.realm, q.tokens, "SELECT * FROM Customer WHERE Id = '1' OR Id = '2'")
    assert with_or.value.status == 400
    assert with_or.value.fault_type == "ValidationFault"
    assert with_or.value.code == "4000"
    assert "OR" in with_or.value.detail
    assert with_or.value.intuit_tid

    with pytest.raises(QuickBooksFault) as too_many:
        await q.client.query(q.realm, q.tokens, "SELECT * FROM Customer MAXRESULTS 1500")
    assert too_many.value.code == "4001"
    assert "1500 is too large" in too_many.value.detail
    assert "1500 is too large" in str(too_many.value)

    token = store.tokens["acme"].access_token
    assert token not in str(with_or.value)
    assert token not in str(too_many.value)


@pytest.mark.anyio
async def test_a_401_after_a_refresh_is_an_auth_error(qbo) -> None:
    q = await qbo(access_token_lifetime=0.0)  # every token the sandbox issues is already dead
    with pytest.raises(QuickBooksAuthError) as caught:
        await q.client.query(q.realm, q.tokens, ONE)
    assert caught.value.status == 401
    assert str(caught.value) == (
        "access token refused after a refresh: AUTHENTICATION 3200: "
        "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    )
    assert q.client.calls == {"401": 2}
    assert q.sandbox.stats()["token_refreshes"] == 2


@pytest.mark.anyio
async def test_a_throttled_realm_waits_then_recovers(qbo, wire) -> None:
    q = await qbo(client={"throttle_wait": 0.2})
    await q.tokens.access_token()
    q.sandbox.set_faults(throttle=2)

    answer = await q.client.query(q.realm, q.tokens, ONE)

    assert answer["QueryResponse"]["Customer"]
    assert q.client.calls == {"429": 2, "200": 1}
    assert q.client.limiter(q.realm).pauses == 2
    # Each retry started no sooner than the pause after the 429 before it.
    starts = [moment for moment, _ in wire.answers]
    assert starts[1] - starts[0] >= 0.2
    assert starts[2] - starts[1] >= 0.2


@pytest.mark.anyio
async def test_a_pause_holds_its_realm_only(qbo, make_manager, wire) -> None:
    realms = ("9341453908128517", "4620816365213040870")
    q = await qbo(realm_ids=realms, client={"throttle_wait": 1.0})
    other = make_manager(q.sandbox, realm=realms[1], instance="other")
    await q.tokens.access_token()
    await other.access_token()
    q.sandbox.set_faults(throttle=1)

    finished: dict[str, float] = {}

    async def paused_realm() -> None:
        await q.client.query(realms[0], q.tokens, ONE)
        finished["paused"] = time.monotonic()

    async with anyio.create_task_group() as group:
        group.start_soon(paused_realm)
        await wire.wait_for(lambda: bool(wire.answers))  # the first answer is the 429
        assert q.client.limiter(realms[0]).paused_for > 0.5
        await q.client.query(realms[1], other, ONE)
        finished["other"] = time.monotonic()

    assert finished["other"] < finished["paused"]
    assert q.client.calls == {"429": 1, "200": 2}


@pytest.mark.anyio
async def test_still_throttled_after_the_retries_raises_rate_limited(qbo) -> None:
    q = await qbo(client={"throttle_wait": 0.1, "throttle_retries": 1})
    await q.tokens.access_token()
    q.sandbox.set_faults(throttle=5)
    with pytest.raises(QuickBooksRateLimited) as caught:
        await q.client.query(q.realm, q.tokens, ONE)
    assert caught.value.status == 429
    assert 0 < caught.value.retry_after <= 0.1
    assert "ThrottleExceeded" in str(caught.value)
    assert q.client.calls == {"429": 2}


@pytest.mark.anyio
async def test_server_errors_are_unavailable(qbo) -> None:
    q = await qbo()
    q.sandbox.set_faults(errors=1, error_status=503)
    with pytest.raises(QuickBooksUnavailable) as unavailable:
        await q.client.query(q.realm, q.tokens, ONE)
    assert unavailable.value.status == 503
    assert unavailable.value.intuit_tid

    q.sandbox.set_faults(errors=1, error_status=500)
    with pytest.raises(QuickBooksUnavailable) as failed:
        await q.client.query(q.realm, q.tokens, ONE)
    assert failed.value.status == 500
    assert "SystemFault" in str(failed.value)

    assert (await q.client.query(q.realm, q.tokens, ONE))["QueryResponse"]
    assert q.client.calls == {"503": 1, "500": 1, "200": 1}


@pytest.mark.anyio
async def test_network_errors_and_timeouts_are_unavailable(qbo, http) -> None:
    q = await qbo(slow=0.5, client={"request_timeout": 0.1})
    with pytest.raises(QuickBooksUnavailable, match="TimeoutError"):
        await q.client.query(q.realm, q.tokens, ONE)
    q.sandbox.set_faults(slow=0.0)

    nowhere = QuickBooksClient(
        http=http,
        base_url=f"http://127.0.0.1:{closed_port()}",
        minor_version=75,
        requests_per_minute=500,
        max_concurrent_requests=10,
    )
    with pytest.raises(QuickBooksUnavailable, match="ClientConnectorError"):
        await nowhere.query(q.realm, q.tokens, ONE)
    assert nowhere.calls == {"error": 1}


@pytest.mark.anyio
async def test_the_limiter_caps_requests_in_flight(qbo, wire) -> None:
    q = await qbo(slow=0.1, max_per_second=1000, client={"max_concurrent_requests": 3, **FAST})
    async with anyio.create_task_group() as group:
        for _ in range(9):
            group.start_soon(q.client.query, q.realm, q.tokens, ONE)
    assert wire.max_in_flight == 3
    assert q.client.limiter(q.realm).max_in_flight == 3
    assert q.client.calls == {"200": 9}


@pytest.mark.anyio
async def test_a_burst_stays_within_intuits_limits(qbo) -> None:
    """The sandbox refuses an 11th call within a second, as QuickBooks does; none is refused."""
    q = await qbo()
    await q.tokens.access_token()
    began = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(15):
            group.start_soon(q.client.query, q.realm, q.tokens, ONE)
    assert time.monotonic() - began >= 1.0
    assert q.client.calls == {"200": 15}
    assert q.sandbox.stats()["throttled_by_limits"] == 0


@pytest.mark.anyio
async def test_requests_per_minute_holds_back_the_next_call(qbo) -> None:
    q = await qbo(client={"requests_per_minute": 3})
    for _ in range(3):
        await q.client.query(q.realm, q.tokens, ONE)
    with anyio.move_on_after(0.3) as fourth:
        await q.client.query(q.realm, q.tokens, ONE)
    assert fourth.cancelled_caught
    assert q.client.calls == {"200": 3}
