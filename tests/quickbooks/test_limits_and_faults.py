"""Pure parts of the QuickBooks side: the realm limiter on a fake clock, Fault bodies, formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from qbo_events.quickbooks.client import format_changed_since
from qbo_events.quickbooks.faults import Fault, parse_fault
from qbo_events.quickbooks.limits import RealmLimiter
from qbo_events.quickbooks.oauth import Tokens, api_base_for, token_url_for
from qbo_events.sinks.retry import parse_retry_after


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeTime:
    """A clock that only moves when the limiter sleeps, so waits are exact and instant.

    It starts at 0 so the sums of the windows' spans stay exact in binary floating point.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(fake: FakeTime, *, per_minute: int, per_second: int = 10) -> RealmLimiter:
    return RealmLimiter(
        requests_per_minute=per_minute,
        max_concurrent_requests=10,
        requests_per_second=per_second,
        clock=fake.clock,
        sleep=fake.sleep,
    )


async def starts(limit: RealmLimiter, fake: FakeTime, count: int) -> list[float]:
    seen = []
    for _ in range(count):
        async with limit.slot():
            seen.append(fake.now)
    return seen


@pytest.mark.anyio
async def test_no_minute_holds_more_than_requests_per_minute() -> None:
    fake = FakeTime()
    seen = await starts(limiter(fake, per_minute=5), fake, 12)
    assert seen == [0.0] * 5 + [60.1] * 5 + [120.2] * 2


@pytest.mark.anyio
async def test_no_second_holds_more_than_intuits_ten() -> None:
    fake = FakeTime()
    seen = await starts(limiter(fake, per_minute=500), fake, 25)
    assert seen == [0.0] * 10 + [1.1] * 10 + [2.2] * 5


@pytest.mark.anyio
async def test_a_pause_holds_back_the_whole_realm() -> None:
    fake = FakeTime()
    limit = limiter(fake, per_minute=500)
    limit.pause(30.0)
    limit.pause(5.0)  # a shorter, later pause never shortens the one in force
    assert limit.paused_for == 30.0
    assert await starts(limit, fake, 2) == [30.0, 30.0]
    assert limit.stats()["pauses"] == 2


def test_json_fault() -> None:
    body = (
        b'{"Fault":{"Error":[{"Message":"Invalid query","Detail":"QueryValidationError: value '
        b'1500 is too large. Max allowed value is 1000","code":"4001","element":""}],'
        b'"type":"ValidationFault"},"time":"2017-09-29T09:17:31.892-07:00"}'
    )
    fault = parse_fault(body)
    assert fault == Fault(
        code="4001",
        type="ValidationFault",
        message="Invalid query",
        detail="QueryValidationError: value 1500 is too large. Max allowed value is 1000",
    )
    assert not fault.throttled


def test_lower_case_fault_envelope() -> None:
    body = (
        b'{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message='
        b'AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Malformed bearer '
        b'token: too short or too long","code":"3200","element":null}],"type":"AUTHENTICATION"},'
        b'"report":null,"queryResponse":null,"time":1633520295688,"cdcresponse":[]}'
    )
    fault = parse_fault(body)
    assert fault is not None
    assert (fault.code, fault.type) == ("3200", "AUTHENTICATION")
    assert fault.detail == "Malformed bearer token: too short or too long"


def test_gateway_fault() -> None:
    body = (
        b'{"code":"AuthenticationFailed","type":"INPUT","message":null,'
        b'"detail":"Malformed bearer token: too short or too long","moreInfo":null}'
    )
    fault = parse_fault(body)
    assert fault is not None
    assert (fault.code, fault.type, fault.message) == ("AuthenticationFailed", "INPUT", "")


def test_xml_throttle_fault() -> None:
    body = (
        b'<IntuitResponse time="2017-07-30T22:45:22.933-07:00" '
        b'xmlns="http://schema.intuit.com/finance/v3"><Fault type="SERVICE"><Error code="3001">'
        b"<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        b"<Detail>The request limit was reached.  Try again later</Detail></Error></Fault>"
        b"</IntuitResponse>"
    )
    fault = parse_fault(body)
    assert fault is not None
    assert (fault.code, fault.type) == ("3001", "SERVICE")
    assert fault.throttled


def test_bodies_without_a_fault() -> None:
    assert parse_fault(b'{"QueryResponse":{},"time":"2015-07-23T11:02:25.149-07:00"}') is None
    assert parse_fault(b"<html><body>503 Service Unavailable</body></html>") is None
    assert parse_fault(b"not json") is None


def test_changed_since_always_has_an_offset() -> None:
    moment = datetime(2026, 11, 27, 13, 4, 47, 900_000, tzinfo=UTC)
    assert format_changed_since(moment) == "2026-11-27T13:04:47+00:00"
    pacific = moment.astimezone(timezone(timedelta(hours=-8)))
    assert format_changed_since(pacific) == "2026-11-27T05:04:47-08:00"
    with pytest.raises(ValueError):
        format_changed_since(datetime(2026, 11, 27, 13, 4, 47))


def test_retry_after() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    now = datetime(2026, 11, 27, 13, 4, 47, tzinfo=UTC).timestamp()
    assert parse_retry_after("Fri, 27 Nov 2026 13:05:17 GMT", now) == 30.0


def test_base_urls() -> None:
    assert api_base_for("production", "") == "https://quickbooks.api.intuit.com"
    assert api_base_for("sandbox", " ") == "https://sandbox-quickbooks.api.intuit.com"
    assert api_base_for("sandbox", "http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    with pytest.raises(ValueError):
        api_base_for("staging", "")
    assert token_url_for("") == "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    assert token_url_for("http://127.0.0.1:9000/t") == "http://127.0.0.1:9000/t"


def test_tokens_repr_shows_no_secret() -> None:
    tokens = Tokens(refresh_token="RT-secret", access_token="AT-secret", access_expires_at=5.0)
    assert "secret" not in repr(tokens)
    assert "secret" not in str(tokens)
