"""`connect --local`: a one-shot listener on 127.0.0.1 that takes the consent redirect itself,
for a laptop with no public webhook listener."""

from __future__ import annotations

import asyncio
import contextlib
import webbrowser
from collections.abc import Callable

from aiohttp import web

from qbo_events.config import Config, Instance
from qbo_events.connect.flow import Connected, Refused, finish, start
from qbo_events.connect.links import local_redirect_uri, registered_local
from qbo_events.connect.pages import page
from qbo_events.connect.store import ConnectionStore
from qbo_events.errors import QboEventsError
from qbo_events.outbox import Outbox


class TimedOut(QboEventsError):
    """No redirect came back in time."""


async def connect_locally(
    outbox: Outbox,
    config: Config,
    instance: Instance,
    *,
    port: int,
    valid: float,
    say: Callable[[str], None],
    open_browser: bool = True,
) -> Connected:
    """Serve the redirect on 127.0.0.1, show (and try to open) the consent URL, and finish
    the flow with the first request to the redirect path. Raises Refused or TimedOut."""
    registered = registered_local(config)
    path, wanted = registered if registered is not None else (config.quickbooks.redirect_path, port)
    store = ConnectionStore(outbox)
    outcome: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()

    async def handle(request: web.BaseRequest) -> web.Response:
        if request.path != path or request.method != "GET" or outcome.done():
            return page(404, "Not found", "Nothing here.")
        query = {key: request.query.get(key, "") for key in request.query}
        try:
            done = await finish(outbox, store, config, query)
        except Refused as exc:
            outcome.set_exception(exc)
            return page(exc.status, "Not connected", str(exc))
        outcome.set_result(done)
        company = done.company_name or f"realm {done.realm_id}"
        return page(
            200,
            "Connected",
            f"Instance {done.instance} is connected to {company}. You may close this page.",
        )

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", wanted)
        await site.start()
        bound = runner.addresses[0][1]
        uri = local_redirect_uri(config, bound)
        url = await start(store, config, instance.name, redirect_uri=uri)
        say(f"waiting for the redirect to {uri}")
        say(f"open this URL to connect instance {instance.name}:\n{url}")
        if open_browser:
            # No browser (a server, a container) is fine: the URL is printed above.
            with contextlib.suppress(Exception):
                webbrowser.open(url)
        try:
            async with asyncio.timeout(valid):
                return await asyncio.shield(outcome)
        except TimeoutError:
            raise TimedOut(
                f"no redirect came back within {valid:g} s; nothing was stored"
            ) from None
    finally:
        await runner.cleanup()
