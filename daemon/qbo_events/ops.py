"""The private health listener: /healthz, /readyz, /status, /metrics, the admin API and the
console over it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qbo_events import console
from qbo_events.admin.api import AdminApi
from qbo_events.admin.schema import DOCUMENT
from qbo_events.logs import redact
from qbo_events.metrics import Metrics


def health_app(
    *,
    metrics: Metrics,
    readiness: Callable[[], list[str]],
    degraded: Callable[[], list[str]],
    status: Callable[[], Awaitable[dict[str, Any]]],
    refresh_metrics: Callable[[], Awaitable[None]],
    admin: AdminApi | None = None,
) -> web.Application:
    """`readiness` returns the reasons the daemon is not ready (none = ready); `degraded`, what
    does not work while it is ready (an instance that needs re-authorization beside others)."""

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is turning.
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reasons = readiness()
        if reasons:
            return _json({"status": "not ready", "reasons": reasons}, status=503)
        problems = degraded()
        return _json({"status": "ready", "degraded": problems} if problems else {"status": "ready"})

    async def status_view(_: web.Request) -> web.Response:
        return _json(await status())

    async def metrics_view(_: web.Request) -> web.Response:
        await refresh_metrics()
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status_view)
    app.router.add_get("/metrics", metrics_view)
    if admin is not None:
        document = DOCUMENT.read_bytes()

        async def openapi(_: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

        admin.add_routes(app, openapi)
        console.add_routes(app)
    return app


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    # Redacted as a whole: whatever a component put in its stats, no secret leaves here.
    text = redact(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    return web.Response(text=text, status=status, content_type="application/json")
