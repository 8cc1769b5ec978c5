"""The Sandbox: binds the app, runs the change generator and the webhook emitter until stopped."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import build_app
from .authorize import AUTHORIZE_PATH
from .calls import Call
from .company import ChangeRecord, Company
from .control import FaultRequest, apply_faults
from .oauth import TOKEN_PATH
from .options import SandboxOptions
from .state import State


class Sandbox:
    """A simulated QuickBooks Online. Use `async with Sandbox(options) as sandbox:` in tests, or
    `await start()` then `await run(stop)`, which returns (closed) once `stop` is set."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.state = State.build(self.options)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stack: AsyncExitStack | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> int:
        """Bind the listener; return the port (the free one picked when the option is 0)."""
        if self._runner is not None:
            return self.port
        runner = web.AppRunner(build_app(self.state), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.options.host, self.options.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def run(self, stop: asyncio.Event) -> None:
        """Serve, make changes and send webhooks until `stop` is set; then close."""
        await self.start()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self.state.generator.run_forever())]
                if self.state.emitter is not None:
                    workers.append(group.create_task(self.state.emitter.deliver_forever()))
                await stop.wait()
                for worker in workers:
                    worker.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        self._stop = asyncio.Event()
        self._stack = AsyncExitStack()
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        group.create_task(self.run(self._stop))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._stop.set()
        try:
            # The body's own exception is not handed to the task group, which would wrap it in
            # an ExceptionGroup; it propagates unchanged once run() has returned.
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self._stack = self._stop = None
            await self.close()

    def __repr__(self) -> str:
        realms = list(self.state.companies)
        return f"<Sandbox {self.base_url} realms={realms} changes={len(self.state.log)}>"

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://host:port`: the API is under `/v3/company/...`."""
        host = self.options.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def authorize_url(self) -> str:
        """Intuit's consent page; the control API's /_sandbox/consent chooses its answer."""
        return self.base_url + AUTHORIZE_PATH

    @property
    def discovery_url(self) -> str:
        """For Intuit's OAuth client, whose `environment` argument may be a discovery URL."""
        return self.base_url + "/.well-known/openid_configuration"

    def refresh_token(self, realm_id: str | None = None) -> str:
        """The first refresh token of a realm (the first realm by default)."""
        tokens = self.options.first_refresh_tokens()
        return tokens[realm_id or self.options.realm_ids[0]]

    # -- driving and inspecting, the same as the control API --------------------------------

    def company(self, realm_id: str | None = None) -> Company:
        return self.state.company(realm_id)

    def make_changes(
        self,
        entity: str,
        operation: str,
        count: int = 1,
        *,
        realm_id: str | None = None,
        object_id: str | None = None,
    ) -> list[ChangeRecord]:
        return self.state.make_changes(realm_id, entity, operation, count, object_id)

    def change_log(self, realm_id: str | None = None, after: int = 0) -> list[ChangeRecord]:
        return self.state.log.records(realm_id, after)

    def calls(self, realm_id: str | None = None, after: int = 0) -> list[Call]:
        """The QuickBooks calls answered, in order, as GET /_sandbox/calls lists them."""
        return self.state.calls.calls(realm_id, after)

    def set_faults(self, **switches: Any) -> dict[str, Any]:
        """Keyword arguments as for POST /_sandbox/faults (throttle=2, expire_tokens=True, ...)."""
        apply_faults(self.state, FaultRequest(**switches))
        return self.state.faults.state()

    def connect(self, realm_id: str | None = None) -> dict[str, str]:
        return self.state.connect(realm_id)

    def set_rate(self, rate: float) -> None:
        self.state.generator.set_rate(rate)

    def flush_webhooks(self) -> None:
        if self.state.emitter is not None:
            self.state.emitter.flush()

    def hold_webhooks(self, held: bool = True) -> None:
        if self.state.emitter is not None:
            self.state.emitter.hold(held)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()
