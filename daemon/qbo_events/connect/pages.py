"""The connect flow's pages on the webhook listener: `GET /connect/{token}`, `GET /reconnect`
and `GET {quickbooks.redirect_path}`; plain HTML, everything echoed escaped."""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from qbo_events.config import Config
from qbo_events.connect.flow import Connected, Refused, finish, start
from qbo_events.connect.links import (
    CONNECT_PREFIX,
    RECONNECT_PATH,
    Verdict,
    redirect_uri,
    token_hash,
)
from qbo_events.connect.status import serving_realm
from qbo_events.connect.store import ConnectionStore
from qbo_events.errors import OutboxError
from qbo_events.outbox import Outbox

log = structlog.get_logger("qbo_events.connect")


def page(status: int, title: str, text: str) -> web.Response:
    """A page a person reads in the browser the consent flow left open."""
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    response = web.Response(status=status, text=body, content_type="text/html")
    # Links and states are secrets: no cache keeps the page, no referrer carries the URL on.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def redirect(url: str) -> web.Response:
    response = web.Response(status=302, headers={"Location": url})
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


class ConnectPages:
    """Answers the connect flow's GETs; `handle` returns None for any other request."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        store: ConnectionStore,
        config: Callable[[], Config],
        on_connected: Callable[[Connected], Awaitable[None]],
    ) -> None:
        self._outbox = outbox
        self._store = store
        self._config = config
        self._on_connected = on_connected

    async def handle(self, request: web.BaseRequest) -> web.Response | None:
        if request.method not in ("GET", "HEAD"):
            return None
        config, path = self._config(), request.path
        try:
            if path.startswith(CONNECT_PREFIX):
                return await self._connect(config, path[len(CONNECT_PREFIX) :])
            if path == RECONNECT_PATH:
                return await self._reconnect(config, request.query.get("realmId", ""))
            if path == config.quickbooks.redirect_path:
                return await self._redirected(config, request)
        except OutboxError as exc:
            log.error("connect page failed: storage", problem=str(exc))
            return page(503, "Try again later", "The service cannot store anything just now.")
        return None

    async def _connect(self, config: Config, token: str) -> web.Response:
        uri = redirect_uri(config)
        if not uri:
            return page(
                503,
                "Not configured",
                "Set quickbooks.redirect_uri or http.public_base_url to connect companies here.",
            )
        now = time.time()
        verdict, instance = await self._store.use_link(token_hash(token), now)
        if verdict is Verdict.UNKNOWN or (verdict is Verdict.OK and not config.instance(instance)):
            return page(404, "Unknown link", "This connect link is not known here.")
        if verdict is not Verdict.OK:
            what = "has been used already" if verdict is Verdict.USED else "has expired"
            return page(
                410, "Link no longer valid", f"This connect link {what}; ask for a new one."
            )
        return redirect(await start(self._store, config, instance, redirect_uri=uri, now=now))

    async def _reconnect(self, config: Config, realm: str) -> web.Response:
        """Intuit's Reconnect URL: only the company an instance serves may come back, and only
        to that instance (the redirect must bring the same realmId)."""
        uri = redirect_uri(config)
        rows = self._store.connections()
        instance = next(
            (
                inst.name
                for inst in config.instances
                if realm and serving_realm(inst, rows.get(inst.name)) == realm
            ),
            None,
        )
        if instance is None or not uri:
            return page(404, "Unknown company", "No instance here serves this company.")
        log.info("reconnect started", instance=instance, realm_id=realm)
        return redirect(
            await start(self._store, config, instance, redirect_uri=uri, realm_id=realm)
        )

    async def _redirected(self, config: Config, request: web.BaseRequest) -> web.Response:
        query = {key: request.query.get(key, "") for key in request.query}
        try:
            done = await finish(self._outbox, self._store, config, query)
        except Refused as exc:
            return page(exc.status, "Not connected", str(exc))
        await self._on_connected(done)
        company = done.company_name or f"realm {done.realm_id}"
        return page(
            200,
            "Connected",
            f"Instance {done.instance} is connected to {company} (realm ID {done.realm_id}).",
        )
