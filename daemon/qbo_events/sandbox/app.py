"""The aiohttp application: routes, request counting and the `intuit_tid` on every response."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from . import api, authorize, control, oauth, writes
from .responses import new_intuit_tid
from .state import REALM, STATE, State


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or "unmatched"
    state = request.app[STATE]
    try:
        response = await handler(request)
    except web.HTTPException as error:
        state.requests[f"{route} {error.status}"] += 1
        state.calls.record(route, _realm(request), error.status)
        raise
    state.requests[f"{route} {response.status}"] += 1
    state.calls.record(route, _realm(request), response.status)
    return response


def _realm(request: web.Request) -> str | None:
    """The company a call was for: the API's path names it; a token call's grant leads to it."""
    realm: str | None = request.match_info.get("realm_id") or request.get(REALM)
    return realm


async def _add_intuit_tid(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["intuit_tid"] = new_intuit_tid()


def build_app(state: State) -> web.Application:
    app = web.Application(middlewares=[count_requests])
    app[STATE] = state
    app.on_response_prepare.append(_add_intuit_tid)
    oauth.add_routes(app)
    authorize.add_routes(app)
    control.add_routes(app)
    api.add_routes(app)
    writes.add_routes(app)  # after api's: /query and /batch are not entities
    return app
