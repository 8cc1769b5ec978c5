"""The QuickBooks accounting API client: Query, CDC and read, within each realm's limits."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote
from xml.etree import ElementTree

import aiohttp
import msgspec
import structlog
from yarl import URL

from qbo_events.errors import (
    QuickBooksAuthError,
    QuickBooksFault,
    QuickBooksRateLimited,
    QuickBooksUnavailable,
)
from qbo_events.quickbooks.oauth import TokenManager
from qbo_events.sinks.retry import parse_retry_after

# Intuit's per-second limit per realm and app, which holds whatever the per-minute setting says.
REQUESTS_PER_SECOND: Final = 10
# Each window is counted this much longer than Intuit's, because the clock here starts a request
# a little before QuickBooks sees it arrive, and network jitter can bunch arrivals together; one
# 429 costs the realm a minute, a tenth of a second per window costs almost nothing.
WINDOW_MARGIN: Final = 0.1
# Intuit ends any request that runs longer than 120 s; wait a little longer for its answer.
REQUEST_TIMEOUT: Final = 130.0
THROTTLE_CODES: Final = frozenset({"3001", "003001"})

log = structlog.get_logger(__name__)


def format_changed_since(moment: datetime) -> str:
    """`2026-11-27T13:04:47+00:00`: whole seconds, always with the offset (bare means Pacific)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            "changedSince needs an aware datetime; QuickBooks reads a bare one as Pacific"
        )
    # Truncating the fraction moves the start earlier, which only widens the window.
    return moment.isoformat(timespec="seconds")


class Fault(msgspec.Struct, frozen=True):
    """The first error of a QuickBooks Fault, from whichever of its body shapes it came in."""

    code: str = ""
    type: str = ""
    message: str = ""
    detail: str = ""

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLE_CODES or "ThrottleExceeded" in self.message


def parse_fault(body: bytes) -> Fault | None:
    """A Fault in a JSON or XML body: `Fault`, the lower-case `fault`, or the gateway's shape."""
    text = body.lstrip()
    if text.startswith(b"<"):
        return _xml_fault(text)
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    return _json_fault(data) if isinstance(data, dict) else None


def _json_fault(data: Mapping[str, Any]) -> Fault | None:
    envelope = data.get("Fault") or data.get("fault")
    if isinstance(envelope, dict):
        errors = envelope.get("Error") or envelope.get("error") or [{}]
        first = errors[0] if isinstance(errors, list) and errors else {}
        first = first if isinstance(first, dict) else {}
        return Fault(
            code=_text(first.get("code") or first.get("Code")),
            type=_text(envelope.get("type") or envelope.get("Type")),
            message=_text(first.get("Message") or first.get("message")),
            detail=_text(first.get("Detail") or first.get("detail")),
        )
    # Intuit's gateway answers with a flat object instead: {"code", "type", "detail", ...}.
    if "code" in data and "type" in data and ("detail" in data or "message" in data):
        return Fault(
            code=_text(data.get("code")),
            type=_text(data.get("type")),
            message=_text(data.get("message")),
            detail=_text(data.get("detail")),
        )
    return None


def _xml_fault(body: bytes) -> Fault | None:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    # Tags carry the namespace `{http://schema.intuit.com/finance/v3}`; match on the local name.
    nodes = {node.tag.rpartition("}")[2]: node for node in root.iter() if isinstance(node.tag, str)}
    fault = nodes.get("Fault")
    if fault is None:
        return None
    error = nodes.get("Error")
    message = nodes.get("Message")
    detail = nodes.get("Detail")
    return Fault(
        code=error.get("code", "") if error is not None else "",
        type=fault.get("type", ""),
        message=(message.text or "").strip() if message is not None else "",
        detail=(detail.text or "").strip() if detail is not None else "",
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)


class _Window:
    """Start times of the requests made within the last `span` seconds, at most `limit` of them."""

    def __init__(self, limit: int, span: float) -> None:
        self.limit = limit
        self.span = span
        self.starts: collections.deque[float] = collections.deque()

    def delay(self, now: float) -> float:
        # The same sum as the delay below, so a start is dropped exactly when its wait is over.
        while self.starts and self.starts[0] + self.span <= now:
            self.starts.popleft()
        return 0.0 if len(self.starts) < self.limit else self.starts[0] + self.span - now


class RealmLimiter:
    """One realm's budget: requests per minute and per second, requests in flight, 429 pauses.

    Sliding windows rather than a token bucket, so no 60 s span ever holds more than
    `requests_per_minute` starts, which is how Intuit counts.
    """

    def __init__(
        self,
        *,
        requests_per_minute: int,
        max_concurrent_requests: int,
        requests_per_second: int = REQUESTS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self._minute = _Window(requests_per_minute, 60.0 + WINDOW_MARGIN)
        self._second = _Window(requests_per_second, 1.0 + WINDOW_MARGIN)
        self._slots = asyncio.Semaphore(max_concurrent_requests)
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """After a 429: no request of this realm starts for `seconds`."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self.pauses += 1

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def stats(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "paused_for": round(self.paused_for, 3),
            "pauses": self.pauses,
        }

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the realm's request slots, started within its rate and outside any pause."""
        async with self._slots:
            while True:
                now = self._clock()
                wait = max(
                    self._paused_until - now, self._minute.delay(now), self._second.delay(now)
                )
                if wait <= 0:
                    break
                # Sleep exactly until the earliest moment the budget allows, then look again:
                # a 429 elsewhere in the realm may have moved that moment meanwhile.
                await self._sleep(wait)
            self._minute.starts.append(now)
            self._second.starts.append(now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


class _Answer(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    intuit_tid: str
    retry_after: float | None


class QuickBooksClient:
    """Query, CDC and read against one API base, for any number of realms and token managers.

    On 429 the realm pauses (Retry-After, else `throttle_wait`) and the call waits and tries again,
    up to `throttle_retries` times; only then does it raise QuickBooksRateLimited. A 401 gets one
    token refresh and one retry. 5xx, timeouts and network errors raise QuickBooksUnavailable at
    once: backing off is the caller's decision.
    """

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        base_url: str,
        minor_version: int,
        requests_per_minute: int,
        max_concurrent_requests: int,
        throttle_wait: float = 60.0,
        throttle_retries: int = 3,
        requests_per_second: int = REQUESTS_PER_SECOND,
        request_timeout: float = REQUEST_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._minor_version = minor_version
        self._requests_per_minute = requests_per_minute
        self._max_concurrent_requests = max_concurrent_requests
        self._requests_per_second = requests_per_second
        self._throttle_wait = throttle_wait
        self._throttle_retries = throttle_retries
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._clock = clock
        self._limiters: dict[str, RealmLimiter] = {}
        self.calls: collections.Counter[str] = collections.Counter()

    def limiter(self, realm_id: str) -> RealmLimiter:
        limiter = self._limiters.get(realm_id)
        if limiter is None:
            limiter = self._limiters[realm_id] = RealmLimiter(
                requests_per_minute=self._requests_per_minute,
                max_concurrent_requests=self._max_concurrent_requests,
                requests_per_second=self._requests_per_second,
                clock=self._clock,
            )
        return limiter

    def stats(self) -> dict[str, object]:
        return {
            "calls": dict(self.calls),
            "realms": {realm: limiter.stats() for realm, limiter in self._limiters.items()},
        }

    def __repr__(self) -> str:
        return f"<QuickBooksClient {self._base_url} calls={sum(self.calls.values())}>"

    async def query(self, realm_id: str, tokens: TokenManager, statement: str) -> dict[str, Any]:
        """Run one `SELECT` statement; the answer holds `QueryResponse` and `time`."""
        return await self._get(realm_id, tokens, "query", {"query": statement})

    async def cdc(
        self, realm_id: str, tokens: TokenManager, entities: Sequence[str], changed_since: datetime
    ) -> dict[str, Any]:
        """Change Data Capture of `entities` since `changed_since` (aware, within 30 days)."""
        if not entities:
            raise ValueError("cdc needs at least one entity")
        params = {
            "entities": ",".join(entities),
            "changedSince": format_changed_since(changed_since),
        }
        answer = await self._get(realm_id, tokens, "cdc", params)
        # A CDC answer can be 200 with the Fault one level down, in place of a QueryResponse.
        for element in answer.get("CDCResponse") or ():
            fault = _json_fault(element) if isinstance(element, dict) else None
            if fault is not None:
                raise _fault_error(fault, 200, "")
        return answer

    async def read(
        self, realm_id: str, tokens: TokenManager, entity: str, object_id: str
    ) -> dict[str, Any]:
        """One object by Id; the answer is `{entity: {...}, "time": ...}`."""
        return await self._get(
            realm_id, tokens, f"{entity.lower()}/{quote(object_id, safe='')}", {}
        )

    async def _get(
        self, realm_id: str, tokens: TokenManager, path: str, params: Mapping[str, str]
    ) -> dict[str, Any]:
        # Built by hand so every reserved character is percent-encoded, `+` as %2B in particular:
        # a bare `+` in an offset would reach QuickBooks as a space.
        query = "&".join(
            f"{key}={quote(value, safe=',')}"
            for key, value in {**params, "minorversion": str(self._minor_version)}.items()
        )
        url = URL(
            f"{self._base_url}/v3/company/{quote(realm_id, safe='')}/{path}?{query}", encoded=True
        )
        limiter = self.limiter(realm_id)
        refreshed = False
        throttled = 0
        while True:
            # Asked each time round: a throttled call may have waited past the token's expiry.
            token = await tokens.access_token()
            answer = await self._send(limiter, url, token, path)
            data, fault = _interpret(answer)

            if answer.status == 401:
                if refreshed:
                    raise QuickBooksAuthError(
                        # A 401's detail may quote the start of the refused token.
                        _describe("access token refused after a refresh", fault, detail=False),
                        status=401,
                        intuit_tid=answer.intuit_tid,
                    )
                refreshed = True
                await tokens.refresh(token)
                continue

            if answer.status == 429 or (fault is not None and fault.throttled):
                wait = answer.retry_after if answer.retry_after is not None else self._throttle_wait
                limiter.pause(wait)
                log.warning(
                    "quickbooks.throttled", realm_id=realm_id, wait=wait, tid=answer.intuit_tid
                )
                if throttled >= self._throttle_retries:
                    raise QuickBooksRateLimited(
                        _describe(f"realm {realm_id} still throttled", fault),
                        retry_after=max(wait, limiter.paused_for),
                        intuit_tid=answer.intuit_tid,
                    )
                throttled += 1
                continue

            if answer.status >= 500:
                raise QuickBooksUnavailable(
                    _describe(f"GET {path}: HTTP {answer.status}", fault),
                    status=answer.status,
                    intuit_tid=answer.intuit_tid,
                )
            if fault is not None:
                raise _fault_error(fault, answer.status, answer.intuit_tid)
            if answer.status != 200:
                raise QuickBooksFault(
                    f"GET {path}: HTTP {answer.status}",
                    status=answer.status,
                    intuit_tid=answer.intuit_tid,
                )
            if data is None:
                raise QuickBooksUnavailable(
                    f"GET {path}: the answer is not a JSON object",
                    status=answer.status,
                    intuit_tid=answer.intuit_tid,
                )
            return data

    async def _send(self, limiter: RealmLimiter, url: URL, token: str, path: str) -> _Answer:
        """One HTTP exchange inside a realm slot; network failures become QuickBooksUnavailable."""
        async with limiter.slot():
            try:
                async with self._http.get(
                    url,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    body = await response.read()
                    status = response.status
                    headers = response.headers
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.calls["error"] += 1
                # The exception's text could carry the URL; its class says enough.
                raise QuickBooksUnavailable(f"GET {path}: {type(exc).__name__}") from None
        self.calls[str(status)] += 1
        return _Answer(
            status=status,
            body=body,
            intuit_tid=headers.get("intuit_tid", ""),
            retry_after=parse_retry_after(headers.get("Retry-After"), time.time()),
        )


def _interpret(answer: _Answer) -> tuple[dict[str, Any] | None, Fault | None]:
    """The JSON object of an answer, if it is one, and the Fault it carries, whatever its status."""
    try:
        data = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        # Not JSON: QuickBooks sends some faults (429 above all) as XML whatever Accept said.
        return None, parse_fault(answer.body)
    if not isinstance(data, dict):
        return None, None
    return data, _json_fault(data)


def _describe(what: str, fault: Fault | None, *, detail: bool = True) -> str:
    if fault is None:
        return what
    head = " ".join(p for p in (fault.type, fault.code) if p)
    tail = "; ".join(p for p in (fault.message, fault.detail if detail else "") if p)
    return ": ".join(p for p in (what, head, tail) if p)


def _fault_error(fault: Fault, status: int, intuit_tid: str) -> QuickBooksFault:
    return QuickBooksFault(
        _describe("QuickBooks fault", fault),
        code=fault.code,
        fault_type=fault.type,
        detail=fault.detail,
        status=status,
        intuit_tid=intuit_tid,
    )
