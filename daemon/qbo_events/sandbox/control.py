"""The control API under /_sandbox/ that tests and the demo use to drive and inspect the sandbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, NamedTuple, TypeVar

import msgspec
import orjson
from aiohttp import web

from .consent import Answer, Decision
from .responses import json_response
from .state import STATE, State


class ChangeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    entity: str
    operation: str
    realm_id: str | None = None
    count: int = 1
    id: str | None = None  # a chosen object; otherwise a random eligible one


class FaultRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    throttle: int | None = None  # 429 for the next N API calls
    errors: int | None = None  # `error_status` for the next N API calls
    error5xx: int | None = None  # the same as `errors`
    error_status: int | None = None  # 500 or 503
    slow: float | None = None  # seconds added to every API answer
    retry_after: float | None = None  # Retry-After seconds on 429s; < 0 stops sending one
    expire_tokens: bool | str | None = None  # true: every realm; or one realm id
    revoke: bool | str | None = None  # true: every realm; or one realm id
    max_per_second: int | None = None
    max_per_minute: int | None = None


class ConsentRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: Decision
    realm_id: str | None = None  # None: the first realm; an unknown one is a new company
    once: bool = False  # the next authorization only, then the standing answer again


class RealmRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    realm_id: str | None = None  # None: the first realm


class HardExpiryRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    seconds: Annotated[float, msgspec.Meta(ge=0)]
    realm_id: str | None = None  # None: the first realm


T = TypeVar("T")


def _bad(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def _decode(request: web.Request, kind: type[T]) -> T | web.Response:
    try:
        return msgspec.json.decode(await request.read() or b"{}", type=kind)
    except msgspec.ValidationError as error:
        return _bad(str(error))
    except msgspec.DecodeError as error:
        return _bad(f"invalid JSON: {error}")


async def post_changes(request: web.Request) -> web.Response:
    wanted = await _decode(request, ChangeRequest)
    if isinstance(wanted, web.Response):
        return wanted
    try:
        made = request.app[STATE].make_changes(
            wanted.realm_id, wanted.entity, wanted.operation, wanted.count, wanted.id
        )
    except (KeyError, ValueError) as error:
        return _bad(str(error.args[0]) if error.args else str(error))
    return json_response({"changes": msgspec.to_builtins(made)})


async def get_changes(request: web.Request) -> web.Response:
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return _bad("after must be an integer (a change's seq)")
    records = request.app[STATE].log.records(request.query.get("realm_id"), after)
    return json_response({"changes": msgspec.to_builtins(records)})


def apply_faults(state: State, wanted: FaultRequest) -> None:
    faults = state.faults
    if wanted.throttle is not None:
        faults.throttle = wanted.throttle
    for count in (wanted.errors, wanted.error5xx):
        if count is not None:
            faults.errors = count
    if wanted.error_status is not None:
        faults.error_status = wanted.error_status
    if wanted.slow is not None:
        faults.slow = wanted.slow
    if wanted.retry_after is not None:
        faults.retry_after = wanted.retry_after if wanted.retry_after >= 0 else None
    if wanted.max_per_second is not None:
        state.limiter.per_second = wanted.max_per_second
    if wanted.max_per_minute is not None:
        state.limiter.per_minute = wanted.max_per_minute
    if wanted.expire_tokens:
        realm = wanted.expire_tokens if isinstance(wanted.expire_tokens, str) else None
        state.tokens.expire_access_tokens(realm)
    if wanted.revoke:
        state.tokens.revoke(wanted.revoke if isinstance(wanted.revoke, str) else None)


async def post_faults(request: web.Request) -> web.Response:
    wanted = await _decode(request, FaultRequest)
    if isinstance(wanted, web.Response):
        return wanted
    state = request.app[STATE]
    for realm in (wanted.expire_tokens, wanted.revoke):
        if isinstance(realm, str) and realm not in state.companies:
            return _bad(f"unknown realm {realm!r}")
    apply_faults(state, wanted)
    return json_response(state.faults.state())


async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].faults.state())


async def get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


async def get_calls(request: web.Request) -> web.Response:
    """The latest QuickBooks calls answered, in order; `after` and `realm_id` narrow them."""
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        return _bad("after must be an integer (a call's seq)")
    calls = request.app[STATE].calls.calls(request.query.get("realm_id"), after)
    return json_response({"calls": msgspec.to_builtins(calls)})


async def flush_webhooks(request: web.Request) -> web.Response:
    emitter = request.app[STATE].emitter
    if emitter is None:
        return _bad("no webhook_url is set")
    emitter.flush()
    return json_response(emitter.stats())


async def hold_webhooks(request: web.Request) -> web.Response:
    """`{"hold": true}` queues notifications without posting them; `false` lets them go."""
    emitter = request.app[STATE].emitter
    if emitter is None:
        return _bad("no webhook_url is set")
    try:
        body: Any = orjson.loads(await request.read() or b"{}")
        held = body["hold"]
        if not isinstance(held, bool):
            raise TypeError(held)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _bad('expected {"hold": true|false}')
    emitter.hold(held)
    return json_response(emitter.stats())


async def post_generator(request: web.Request) -> web.Response:
    try:
        body: Any = orjson.loads(await request.read() or b"{}")
        rate = float(body["rate"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _bad('expected {"rate": <changes per second>}')
    generator = request.app[STATE].generator
    generator.set_rate(rate)
    return json_response({"rate": generator.rate, "made": generator.made})


async def post_connect(request: web.Request) -> web.Response:
    try:
        body: Any = orjson.loads(await request.read() or b"{}")
        connection = request.app[STATE].connect(body.get("realm_id"))
    except (orjson.JSONDecodeError, AttributeError):
        return _bad('expected {"realm_id": "..."}')
    except KeyError as error:
        return _bad(str(error.args[0]))
    return json_response(connection)


def _answer_state(state: State, answer: Answer) -> dict[str, Any]:
    return {"decision": answer.decision, "realm_id": state.company(answer.realm_id).realm_id}


def _consent_state(state: State) -> dict[str, Any]:
    once = state.consent.once
    return {
        **_answer_state(state, state.consent.standing),
        "once": None if once is None else _answer_state(state, once),
    }


async def post_consent(request: web.Request) -> web.Response:
    wanted = await _decode(request, ConsentRequest)
    if isinstance(wanted, web.Response):
        return wanted
    state = request.app[STATE]
    realm_id = wanted.realm_id
    if realm_id is not None and realm_id not in state.companies:
        # QuickBooks realm ids are digits; anything else is more likely a mistake than a company.
        if not (realm_id.isascii() and realm_id.isdigit() and len(realm_id) <= 32):
            return _bad(f"unknown realm {realm_id!r}; a new company's realm id is digits")
        state.add_company(realm_id)
    state.consent.set(Answer(decision=wanted.decision, realm_id=realm_id), once=wanted.once)
    return json_response(_consent_state(state))


async def get_consent(request: web.Request) -> web.Response:
    return json_response(_consent_state(request.app[STATE]))


async def get_authorizations(request: web.Request) -> web.Response:
    records = request.app[STATE].authorizations.records(request.query.get("realm_id"))
    return json_response({"authorizations": msgspec.to_builtins(records)})


async def get_revocations(request: web.Request) -> web.Response:
    records = request.app[STATE].revocations.records(request.query.get("realm_id"))
    return json_response({"revocations": msgspec.to_builtins(records)})


async def post_disconnect(request: web.Request) -> web.Response:
    """The user disconnected the app in QuickBooks: every token of the realm dies at once, and
    nothing tells the app (Intuit sends no webhook for it)."""
    wanted = await _decode(request, RealmRequest)
    if isinstance(wanted, web.Response):
        return wanted
    state = request.app[STATE]
    try:
        realm_id = state.company(wanted.realm_id).realm_id
    except KeyError as error:
        return _bad(str(error.args[0]))
    refresh, access = state.tokens.revoke(realm_id)
    return json_response(
        {"realm_id": realm_id, "refresh_tokens_revoked": refresh, "access_tokens_revoked": access}
    )


async def post_hard_expiry(request: web.Request) -> web.Response:
    wanted = await _decode(request, HardExpiryRequest)
    if isinstance(wanted, web.Response):
        return wanted
    state = request.app[STATE]
    try:
        realm_id = state.company(wanted.realm_id).realm_id
    except KeyError as error:
        return _bad(str(error.args[0]))
    chains = state.tokens.set_hard_expiry(realm_id, wanted.seconds)
    return json_response({"realm_id": realm_id, "seconds": wanted.seconds, "chains": chains})


class Endpoint(NamedTuple):
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    name: str
    description: str


# The routes and the index page are made from this one list, so the index cannot fall behind.
ENDPOINTS: Final = (
    Endpoint(
        "POST",
        "/_sandbox/changes",
        post_changes,
        "control-changes",
        'make changes now: {"entity", "operation", "realm_id"?, "count"?, "id"?}',
    ),
    Endpoint(
        "GET",
        "/_sandbox/changes",
        get_changes,
        "control-change-log",
        "the change log, each change with the event a client must derive; ?after=seq&realm_id=",
    ),
    Endpoint(
        "POST",
        "/_sandbox/faults",
        post_faults,
        "control-faults",
        "switch faults: throttle, errors, error_status, slow, retry_after, expire_tokens, revoke, "
        "max_per_second, max_per_minute",
    ),
    Endpoint(
        "GET", "/_sandbox/faults", get_faults, "control-fault-state", "the faults switched on"
    ),
    Endpoint(
        "GET",
        "/_sandbox/stats",
        get_stats,
        "control-stats",
        "counters: requests by route and status, calls by kind overall and per realm, tokens, "
        "changes, webhooks, objects",
    ),
    Endpoint(
        "GET",
        "/_sandbox/calls",
        get_calls,
        "control-calls",
        "the latest QuickBooks calls (kind, realm, status, time) in order; ?after=seq&realm_id=",
    ),
    Endpoint(
        "POST",
        "/_sandbox/webhooks/flush",
        flush_webhooks,
        "control-flush",
        "send the queued webhook notifications now",
    ),
    Endpoint(
        "POST",
        "/_sandbox/webhooks/hold",
        hold_webhooks,
        "control-hold",
        'hold webhook notifications back, or let them go: {"hold": true|false}',
    ),
    Endpoint(
        "POST",
        "/_sandbox/generator",
        post_generator,
        "control-generator",
        'set the random change rate: {"rate": changes per second}',
    ),
    Endpoint(
        "POST",
        "/_sandbox/connect",
        post_connect,
        "control-connect",
        'a fresh connection to a realm: a new refresh token and auth code; {"realm_id"}',
    ),
    Endpoint(
        "POST",
        "/_sandbox/consent",
        post_consent,
        "control-consent",
        "how the consent page at /connect/oauth2 answers: "
        '{"decision": "approve"|"deny", "realm_id"?, "once"?}',
    ),
    Endpoint(
        "GET",
        "/_sandbox/consent",
        get_consent,
        "control-consent-state",
        "the consent page's standing answer and the one-shot answer, if any",
    ),
    Endpoint(
        "GET",
        "/_sandbox/authorizations",
        get_authorizations,
        "control-authorizations",
        "the authorizations answered (time, realm, decision, redirect_uri, state); ?realm_id=",
    ),
    Endpoint(
        "GET",
        "/_sandbox/revocations",
        get_revocations,
        "control-revocations",
        "the calls to the revoke endpoint (time, realm, token kind, status); ?realm_id=",
    ),
    Endpoint(
        "POST",
        "/_sandbox/disconnect",
        post_disconnect,
        "control-disconnect",
        'the user disconnects the app: every token of the realm dies; {"realm_id"?}',
    ),
    Endpoint(
        "POST",
        "/_sandbox/hard_expiry",
        post_hard_expiry,
        "control-hard-expiry",
        "the realm's refresh-token chains hard-expire this many seconds from now; "
        '{"seconds", "realm_id"?}',
    ),
)


async def get_index(request: web.Request) -> web.Response:
    endpoints = [
        {"method": e.method, "path": e.path, "description": e.description} for e in ENDPOINTS
    ]
    return json_response({"endpoints": endpoints})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sandbox/", get_index, name="control-index")
    app.router.add_get("/_sandbox", get_index, name="control-index-bare")
    for e in ENDPOINTS:
        app.router.add_route(e.method, e.path, e.handler, name=e.name)
