"""The webhook listener: verify `intuit-signature`, normalize, fan out, store, then answer 200."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from qbo_events.errors import OutboxError
from qbo_events.events import Source
from qbo_events.metrics import Metrics
from qbo_events.normalize import WebhookPayloadError, parse_webhook
from qbo_events.outbox import Outbox
from qbo_events.routing import Routes
from qbo_events.sinks.signing import verify_intuit
from qbo_events.sources.connections import BoundedServer

log = structlog.get_logger("qbo_events.webhooks")


class WebhookListener:
    """Holds what a reload may change (routes, verifier token) and counts what it saw."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        routes: Routes,
        verifier_token: str,
        metrics: Metrics,
        on_accepted: Callable[[set[str]], None],
        path: str,
        max_body_bytes: int,
        max_connections: int = 1024,
        read_timeout: float = 10.0,
    ) -> None:
        self._outbox = outbox
        self.routes = routes
        self.verifier_token = verifier_token
        self._metrics = metrics
        self._on_accepted = on_accepted
        self.accepting = True
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._server: BoundedServer | None = None
        # The connect flow's GET pages (connect/pages.py), served beside the webhook path.
        self.pages: Callable[[web.BaseRequest], Awaitable[web.Response | None]] | None = None
        self.counts: Counter[str] = Counter()
        self._by_status: dict[int, Any] = {}
        self._accepted = metrics.events_accepted.labels(Source.WEBHOOK.value)
        self._duplicate = metrics.events_duplicate.labels(Source.WEBHOOK.value)

    def app(self) -> web.Server:
        """aiohttp's low-level server, with no router: the path and the body limit are read per
        request, so that a reload can change them without binding the socket again, and one
        path needs no routing table. Its connections are bounded (see sources/connections.py);
        the limits too are read per connection."""
        self._server = BoundedServer(
            self.handle, limits=lambda: (self.max_connections, self.read_timeout), access_log=None
        )
        return self._server

    def stats(self) -> dict[str, Any]:
        return {**self.counts, **(self._server.stats() if self._server else {})}

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if self.pages is not None and request.path != self.path:
            page = await self.pages(request)
            if page is not None:
                return page  # a person's browser, not a webhook: not counted as one
        response = await self._handle(request)
        self.counts[f"http_{response.status}"] += 1
        counter = self._by_status.get(response.status)
        if counter is None:
            counter = self._by_status[response.status] = self._metrics.webhook_requests.labels(
                str(response.status)
            )
        counter.inc()
        return response

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.path != self.path:
            return _json(404, "not found")
        if request.method != "POST":
            response = _json(405, "method not allowed")
            response.headers["Allow"] = "POST"
            return response
        if not self.accepting:
            return _json(503, "shutting down")
        try:
            body = await self._read(request)
        except TimeoutError:
            response = _json(408, "body not received in time")
            response.force_close()  # what is left of the body is not worth waiting for
            return response
        except web.RequestPayloadError:
            # A Content-Encoding (gzip, deflate) the bytes do not match, or broken chunking:
            # there is no body to check a signature over, now or on a retry.
            response = _json(400, "body cannot be decoded")
            response.force_close()
            return response
        if body is None:
            return _json(413, "body too large")
        # An empty verifier token would make every body "signed" by anyone.
        header = request.headers.get("intuit-signature")
        if not self.verifier_token or not verify_intuit(self.verifier_token, body, header):
            log.warning("webhook with a missing or wrong intuit-signature", bytes=len(body))
            return _json(401, "bad signature")
        try:
            changes = parse_webhook(body)
        except WebhookPayloadError as exc:
            return await self._quarantine(body, str(exc))
        events, unknown, unsubscribed = self.routes.route(changes)
        if unknown:
            self._unrouted([c.realm_id for c in changes if not self.routes.serves(c.realm_id)])
        try:
            new = await self._outbox.accept(events)
        except OutboxError as exc:
            self._outbox.log_refusal(
                log, "webhook refused: the outbox cannot take it", reason=str(exc)
            )
            return _json(503, "cannot store now; retry later")
        self.counts["entities"] += len(changes)
        if unsubscribed:
            # Left out by the instances' resource lists: expected, so counted and not logged.
            self.counts["unsubscribed_entities"] += unsubscribed
            self._metrics.webhook_unsubscribed.inc(unsubscribed)
        self._accepted.inc(new)
        self._duplicate.inc(len(events) - new)
        if new:
            self._on_accepted({e.instance for e in events})
        return web.Response(body=_OK, content_type="application/json")

    def _unrouted(self, realms: list[str]) -> None:
        """Entities no webhook-taking instance wants, one realm id each. Those of realms that
        are only polled are expected (QuickBooks sends them if the app subscribes; polling
        reads the same changes), so they are counted apart and not logged."""
        unknown = [r for r in realms if not self.routes.polled_only(r)]
        if len(unknown) < len(realms):
            self.counts["polled_realm_entities"] += len(realms) - len(unknown)
        if unknown:
            self.counts["unknown_realm_entities"] += len(unknown)
            self._metrics.webhook_unknown_realm.inc(len(unknown))
            log.info(
                "webhook entities for realms no instance serves",
                count=len(unknown),
                realms=sorted(set(unknown)),
            )

    async def _read(self, request: web.BaseRequest) -> bytes | None:
        """The body, or None past `max_body_bytes` (checked before and while reading it);
        TimeoutError if it takes longer than `read_timeout`."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        # With no router, aiohttp leaves `Expect: 100-continue` to us; asked only once the
        # declared length is known to fit, so an oversized body is refused before it is sent.
        expect = request.headers.get("Expect", "")
        if request.version >= (1, 1) and expect.lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # Not part of the answer: aiohttp must still be able to answer an error with a 500.
            request.writer.output_size = 0
        chunks: list[bytes] = []
        size = 0
        # A body that came with the headers (the usual webhook) needs no timer.
        timeout = None if request.content.is_eof() else self.read_timeout
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
        return b"".join(chunks)

    async def _quarantine(self, body: bytes, reason: str) -> web.Response:
        try:
            await self._outbox.quarantine(body, reason)
        except OutboxError as exc:
            self._outbox.log_refusal(log, "webhook refused: cannot quarantine", reason=str(exc))
            return _json(503, "cannot store now; retry later")
        self.counts["quarantined"] += 1
        log.warning("signed webhook body not understood; quarantined", reason=reason)
        # 200, not 400: a 400 makes QuickBooks retry the whole batch forever.
        return _json(200, "quarantined")


_OK = b'{"status": "ok"}'


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"status": message}, status=status)
