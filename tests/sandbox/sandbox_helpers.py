"""Helpers for the sandbox tests: fast options, a webhook receiver, raw API calls, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from qbo_events.sandbox import Sandbox, SandboxOptions


def fast_options(**overrides: Any) -> SandboxOptions:
    """Small companies, generous limits and a webhook retry schedule a hundred times faster."""
    settings: dict[str, Any] = {
        "seed": 5,
        "random_seed": 7,
        "max_per_second": 100_000,
        "max_per_minute": 1_000_000,
        "webhook_retry_scale": 0.01,
        "webhook_batch_delay": 0.05,
    }
    settings.update(overrides)
    return SandboxOptions(**settings)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until `condition()` holds; fail after `within` seconds.

    For state that offers nothing to await (a counter in the sandbox); checked every 10 ms.
    """
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint on a free port that answers with `statuses` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.deliveries.append(Delivery(dict(request.headers), await request.read()))
        self._arrived.set()
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, within: float = 5.0) -> list[Delivery]:
        """Wait until `count` POSTs have arrived; fail after `within` seconds."""
        async with asyncio.timeout(within):
            while len(self.deliveries) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.deliveries


class Api:
    """Raw HTTP against one realm with a fresh access token."""

    def __init__(self, sandbox: Sandbox, session: aiohttp.ClientSession, access_token: str):
        self.sandbox = sandbox
        self.session = session
        self.base = f"{sandbox.base_url}/v3/company/{sandbox.options.realm_ids[0]}"
        self.headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}

    @classmethod
    async def connect(cls, sandbox: Sandbox, session: aiohttp.ClientSession) -> Api:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": sandbox.refresh_token(),
            "client_id": sandbox.options.client_id,
            "client_secret": sandbox.options.client_secret,
        }
        async with session.post(sandbox.token_url, data=form) as response:
            return cls(sandbox, session, (await response.json())["access_token"])

    async def get(self, path: str, **params: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        params.setdefault("minorversion", "75")
        async with self.session.get(self.base + path, params=params, headers=self.headers) as r:
            is_json = r.content_type == "application/json"
            return r.status, await (r.json() if is_json else r.text()), r

    async def query(self, text: str) -> tuple[int, Any]:
        status, body, _ = await self.get("/query", query=text)
        return status, body

    async def cdc(self, entities: str, since: datetime | str) -> tuple[int, Any]:
        stamp = since if isinstance(since, str) else since.isoformat()
        status, body, _ = await self.get("/cdc", entities=entities, changedSince=stamp)
        return status, body
