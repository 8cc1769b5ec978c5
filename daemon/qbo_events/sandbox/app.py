"""The aiohttp application: routes, request counting and the `intuit_tid` on every response."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from . import api, control, oauth, writes
from .responses import new_intuit_tid
from .state import STATE, State


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as error:
        request.app[STATE].requests[f"{route} {error.status}"] += 1
        raise
    request.app[STATE].requests[f"{route} {response.status}"] += 1
    return response


async def _add_intuit_tid(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["intuit_tid"] = new_intuit_tid()


def build_app(state: State) -> web.Application:
    app = web.Application(middlewares=[count_requests])
    app[STATE] = state
    app.on_response_prepare.append(_add_intuit_tid)
    oauth.add_routes(app)
    control.add_routes(app)
    api.add_routes(app)
    writes.add_routes(app)  # after api's: /query and /batch are not entities
    return app
