"""The daemon's two HTTP listeners: bind, re-bind on reload, and bind failures in one line."""

from __future__ import annotations

import errno
import resource
import socket
from collections.abc import Callable

import structlog
from aiohttp import web

from qbo_events.config import parse_listen
from qbo_events.errors import StartupError

log = structlog.get_logger("qbo_events.listeners")

# The health endpoints are an Application; the webhook listener, aiohttp's low-level Server.
Listener = web.Application | web.Server

_CAUSES = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this host",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def bind_error(key: str, address: str, exc: OSError) -> StartupError:
    """`http.webhook_listen 127.0.0.1:8080: address already in use`, instead of a traceback."""
    if isinstance(exc, socket.gaierror):
        cause = f"cannot resolve the host ({exc.strerror})"
    else:
        cause = _CAUSES.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    return StartupError(f"{key} {address}: {cause}")


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one: each webhook connection holds a
    descriptor, and a default soft limit of 1024 is below `http.max_connections`' default plus
    the outbox and the deliveries. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        # Some kernels refuse an infinite soft limit for files; a large finite one is enough.
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            log.debug("cannot raise the open files limit", soft=soft, hard=hard)
    return soft


class Site:
    """One aiohttp listener, named by its config key, that can be re-bound on reload."""

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key
        self.runner: web.BaseRunner | None = None
        self.address = ""

    async def bind(self, make_app: Callable[[], Listener], address: str) -> None:
        """Bind the new listener before closing the old one, so a bad address changes nothing.
        On the same port that cannot be done: there the old one closes first, and comes back
        if the new one fails. A failure raises StartupError naming the key and the cause."""
        host, port = parse_listen(address)
        old, old_address = self.runner, self.address
        same_port = old is not None and parse_listen(old_address)[1] == port
        if same_port and old is not None:
            await old.cleanup()
            self.runner = None
        try:
            self.runner = await _serve(make_app(), host, port)
        except OSError as exc:
            if same_port:
                await self._restore(make_app, old_address)
            raise bind_error(self.key, address, exc) from None
        self.address = address
        if old is not None and not same_port:
            await old.cleanup()
        log.info("listening", listener=self.name, address=address)

    async def _restore(self, make_app: Callable[[], Listener], address: str) -> None:
        """Bind the old address again after a failed move; if another process took it in the
        gap, the listener stays unbound (`/readyz` says so) until a reload binds it."""
        try:
            self.runner = await _serve(make_app(), *parse_listen(address))
        except OSError as exc:
            self.address = ""
            log.error(
                "listener lost: its old address could not be bound again",
                listener=self.name,
                address=address,
                error=str(bind_error(self.key, address, exc)),
            )

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def _serve(app: Listener, host: str, port: int) -> web.BaseRunner:
    runner: web.BaseRunner
    if isinstance(app, web.Server):
        runner = web.ServerRunner(app, handle_signals=False)
    else:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
