"""Intuit's authorization endpoint, /connect/oauth2: a consent page that answers at once, with
the answer the control API chose (approve as a company, or deny)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Final, NamedTuple

from aiohttp import web
from yarl import URL

from .state import REALM, STATE

AUTHORIZE_PATH: Final = "/connect/oauth2"
ACCOUNTING_SCOPE: Final = "com.intuit.quickbooks.accounting"


class Refused(Exception):
    """A request Intuit answers with an error page of its own, not with a redirect."""


class Request(NamedTuple):
    redirect_uri: str
    state: str | None  # optional at Intuit; passed back only when given
    scope: str


def check(query: Mapping[str, str], *, client_id: str, redirect_uris: tuple[str, ...]) -> Request:
    """The authorization request, or Refused saying what is wrong with it.

    Intuit shows an error page, and does not redirect, for an unknown client or a redirect URI
    the app has not registered: redirecting there would hand the answer to a stranger."""
    if query.get("client_id", "") != client_id:
        raise Refused("The client_id is not that of a known app.")
    redirect_uri = query.get("redirect_uri", "")
    if not redirect_uri:
        raise Refused("The redirect_uri is missing.")
    url = URL(redirect_uri)
    if not url.absolute or url.scheme not in ("http", "https") or not url.host or url.fragment:
        raise Refused("The redirect_uri must be an absolute http(s) URI without a fragment.")
    if redirect_uris and redirect_uri not in redirect_uris:
        raise Refused("The redirect_uri is not registered for this app.")
    if query.get("response_type") != "code":
        raise Refused("The response_type must be 'code'.")
    scope = query.get("scope", "")
    if ACCOUNTING_SCOPE not in scope.split():
        raise Refused(f"The scope must include {ACCOUNTING_SCOPE}.")
    return Request(redirect_uri, query.get("state"), scope)


def _refusal(reason: str) -> web.Response:
    text = html.escape(reason)
    body = (
        "<!DOCTYPE html>\n<html><head><title>Authorization error</title></head>"
        f"<body><h1>Authorization error</h1><p>{text}</p></body></html>\n"
    )
    return web.Response(status=400, text=body, content_type="text/html")


async def authorize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        wanted = check(
            request.query,
            client_id=state.options.client_id,
            redirect_uris=state.options.redirect_uris,
        )
    except Refused as refused:
        return _refusal(str(refused))
    answer = state.consent.take()
    realm_id = state.company(answer.realm_id).realm_id
    request[REALM] = realm_id
    params = (
        {"code": state.tokens.add_auth_code(realm_id)}
        if answer.decision == "approve"
        else {"error": "access_denied"}
    )
    if wanted.state is not None:
        params["state"] = wanted.state
    if answer.decision == "approve":
        params["realmId"] = realm_id
    state.authorizations.add(
        realm_id=realm_id,
        decision=answer.decision,
        redirect_uri=wanted.redirect_uri,
        state=wanted.state,
        scope=wanted.scope,
    )
    location = URL(wanted.redirect_uri).update_query(params)
    return web.Response(status=302, headers={"Location": str(location)})


def add_routes(app: web.Application) -> None:
    app.router.add_get(AUTHORIZE_PATH, authorize, name="authorize")
