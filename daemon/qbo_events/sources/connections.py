"""aiohttp's low-level server with its connections bounded, so slow clients cannot tie it up.

At most `max_connections` are open. A connection with no request under way (silent, or still
sending its headers) is idle: when the cap is reached, the oldest idle one is closed to make
room, so a crowd of idle or slowloris connections cannot lock out real webhooks. Only when every
connection has a request under way is the newcomer answered 503 and closed. Headers must be
complete within `read_timeout` of the connection opening (aiohttp's keep-alive timer, which
also runs before the first request), or the connection is closed; the body's own bound is the
listener's (408).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

Limits = Callable[[], tuple[int, float]]  # (max_connections, read_timeout), read per connection

_BODY = b'{"status": "too many connections; retry later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


class BoundedServer(web.Server):
    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        limits: Limits,
        **kwargs: Any,
    ) -> None:
        self._limits = limits
        self._busy: set[RequestHandler] = set()
        self.evicted = 0
        self.refused = 0
        super().__init__(self._serve, **kwargs)
        self._inner = handler

    def stats(self) -> dict[str, int]:
        return {
            "connections_open": len(self._connections),
            "connections_busy": len(self._busy),
            "connections_evicted": self.evicted,
            "connections_refused": self.refused,
        }

    def __call__(self) -> RequestHandler:
        # The keep-alive timer also closes a connection whose first request's headers have not
        # arrived in time; read per connection so that a reload applies to the next one.
        return RequestHandler(
            self, loop=self._loop, keepalive_timeout=self._limits()[1], **self._kwargs
        )

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self._limits()[0] and not self._evict_idle():
            self.refused += 1
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(handler, transport)

    def _evict_idle(self) -> bool:
        """Close the oldest connection with no request under way; False if there is none."""
        for handler, transport in self._connections.items():
            if handler not in self._busy:
                self.evicted += 1
                del self._connections[handler]
                transport.close()
                return True
        return False

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        self._busy.add(protocol)
        try:
            return await self._inner(request)
        finally:
            self._busy.discard(protocol)
