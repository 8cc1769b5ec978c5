"""The QuickBooks accounting API client: Query, CDC and read, within each realm's limits."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import msgspec
import structlog
from yarl import URL

from qbo_events.errors import (
    BudgetExhausted,
    QuickBooksAuthError,
    QuickBooksFault,
    QuickBooksRateLimited,
    QuickBooksUnavailable,
)
from qbo_events.quickbooks.faults import Fault, json_fault, parse_fault
from qbo_events.quickbooks.limits import REQUESTS_PER_SECOND, RealmLimiter
from qbo_events.quickbooks.meter import kind_of
from qbo_events.quickbooks.oauth import TokenManager
from qbo_events.sinks.retry import parse_retry_after

# Intuit ends any request that runs longer than 120 s; wait a little longer for its answer.
REQUEST_TIMEOUT: Final = 130.0

log = structlog.get_logger(__name__)


def format_changed_since(moment: datetime) -> str:
    """`2026-11-27T13:04:47+00:00`: whole seconds, always with the offset (bare means Pacific)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            "changedSince needs an aware datetime; QuickBooks reads a bare one as Pacific"
        )
    # Truncating the fraction moves the start earlier, which only widens the window.
    return moment.isoformat(timespec="seconds")


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
        count_call: Callable[[str, str], None] | None = None,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self._http = http
        self._count_call = count_call  # (instance, kind) of every request sent
        self._admit = admit  # False for a kind of call the monthly budget has no room for
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
            fault = json_fault(element) if isinstance(element, dict) else None
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
            answer = await self._send(limiter, url, token, path, tokens.instance)
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

    async def _send(
        self, limiter: RealmLimiter, url: URL, token: str, path: str, instance: str
    ) -> _Answer:
        """One HTTP exchange inside a realm slot; network failures become QuickBooksUnavailable."""
        async with limiter.slot():
            kind = kind_of(path)
            if self._admit is not None and not self._admit(kind):
                self.calls["budget"] += 1
                raise BudgetExhausted(f"GET {path}: the monthly call budget is spent")
            if self._count_call is not None:
                # Counted as it leaves: Intuit meters each request, retries and failures included.
                self._count_call(instance, kind)
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
    return data, json_fault(data)


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
