"""Fixtures for the QuickBooks client tests: a running sandbox, a traced HTTP session, a store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from qbo_events.quickbooks.client import QuickBooksClient
from qbo_events.quickbooks.oauth import TokenManager, Tokens
from qbo_events.sandbox import Sandbox, SandboxOptions

INSTANCE = "acme"


class MemoryStore:
    """A dict-backed TokenStore that writes what it saves into the shared `log`."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.tokens: dict[str, Tokens] = {}
        self.log = log
        self.saves = 0

    async def load_tokens(self, instance: str) -> Tokens | None:
        return self.tokens.get(instance)

    async def save_tokens(self, instance: str, tokens: Tokens) -> None:
        self.tokens[instance] = tokens
        self.saves += 1
        self.log.append(("save", tokens.access_token))


class Wire:
    """What the client put on the wire, seen through aiohttp's tracing hooks."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.log = log
        self.in_flight = 0
        self.max_in_flight = 0
        self.urls: list[str] = []
        self.answers: list[tuple[float, int]] = []  # (monotonic time, status) of API answers
        self._answered = asyncio.Condition()

    async def wait_for(self, predicate: Callable[[], bool], deadline: float = 5.0) -> None:
        """Until `predicate()` holds after some answer, failing after `deadline` seconds."""
        async with asyncio.timeout(deadline), self._answered:
            await self._answered.wait_for(predicate)

    def config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._start)
        trace.on_request_end.append(self._end)
        trace.on_request_exception.append(self._failed)
        return trace

    @staticmethod
    def _api(url: Any) -> bool:
        return "/v3/company/" in str(url)

    async def _start(self, session: Any, context: Any, params: Any) -> None:
        if self._api(params.url):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.urls.append(str(params.url))
            self.log.append(("use", params.headers["Authorization"].removeprefix("Bearer ")))

    async def _end(self, session: Any, context: Any, params: Any) -> None:
        if self._api(params.url):
            self.in_flight -= 1
            self.answers.append((time.monotonic(), params.response.status))
            async with self._answered:
                self._answered.notify_all()

    async def _failed(self, session: Any, context: Any, params: Any) -> None:
        if self._api(params.url):
            self.in_flight -= 1


@pytest.fixture
def log() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def store(log: list[tuple[str, str]]) -> MemoryStore:
    return MemoryStore(log)


@pytest.fixture
def wire(log: list[tuple[str, str]]) -> Wire:
    return Wire(log)


@pytest.fixture
async def http(wire: Wire) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trace_configs=[wire.config()]) as session:
        yield session


Start = Callable[..., Awaitable[SimpleNamespace]]


@pytest.fixture
async def qbo(http: aiohttp.ClientSession, store: MemoryStore) -> AsyncIterator[Start]:
    """`await qbo(sandbox options..., client=dict(...))`: a sandbox on a free port of 127.0.0.1
    and a client and token manager pointed at it; all closed when the test ends."""
    async with AsyncExitStack() as stack:

        async def start(*, client: dict[str, Any] | None = None, **options: Any) -> SimpleNamespace:
            options.setdefault("random_seed", 7)
            sandbox = await stack.enter_async_context(Sandbox(SandboxOptions(**options)))
            settings: dict[str, Any] = {
                "requests_per_minute": 500,
                "max_concurrent_requests": 10,
                "minor_version": 75,
                **(client or {}),
            }
            return SimpleNamespace(
                sandbox=sandbox,
                realm=sandbox.options.realm_ids[0],
                client=QuickBooksClient(http=http, base_url=sandbox.base_url, **settings),
                tokens=manager(sandbox, http, store=store),
            )

        yield start


@pytest.fixture
def make_manager(http: aiohttp.ClientSession, store: MemoryStore) -> Callable[..., TokenManager]:
    """`make_manager(sandbox, realm=..., store=..., **overrides)`: another TokenManager."""

    def make(sandbox: Sandbox, **kwargs: Any) -> TokenManager:
        kwargs.setdefault("store", store)
        return manager(sandbox, http, **kwargs)

    return make


def manager(
    sandbox: Sandbox,
    http: aiohttp.ClientSession,
    *,
    store: MemoryStore,
    realm: str | None = None,
    instance: str = INSTANCE,
    **overrides: Any,
) -> TokenManager:
    settings: dict[str, Any] = {
        "instance": instance,
        "http": http,
        "token_url": sandbox.token_url,
        "client_id": sandbox.options.client_id,
        "client_secret": sandbox.options.client_secret,
        "store": store,
        "initial_refresh_token": sandbox.refresh_token(realm),
        **overrides,
    }
    return TokenManager(**settings)
