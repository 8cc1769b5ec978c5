"""The OAuth endpoints: token (refresh and code grants), revoke, and a discovery document.

The authorization endpoint, which a browser visits, is in `authorize`."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

import orjson
from aiohttp import hdrs, web

from .auth import InvalidClient, InvalidGrant
from .authorize import AUTHORIZE_PATH
from .responses import json_response
from .state import REALM, STATE

TOKEN_PATH = "/oauth2/v1/tokens/bearer"
# Intuit's revoke endpoint is /v2/oauth2/tokens/revoke on another host; the v1 path is kept for
# clients written against earlier sandboxes.
REVOKE_PATH = "/v2/oauth2/tokens/revoke"
REVOKE_PATH_V1 = "/oauth2/v1/tokens/revoke"
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"


def _client(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    """Basic auth (client_secret_basic) or form fields (client_secret_post); both are used."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        # RFC 6749 2.3.1: both halves are form-encoded before they are joined.
        return unquote_plus(client_id), unquote_plus(client_secret)
    return form.get("client_id", ""), form.get("client_secret", "")


def _oauth_error(error: str, description: str | None, status: int) -> web.Response:
    body = (
        {"error": error}
        if description is None
        else {"error_description": description, "error": error}
    )
    return json_response(body, status=status)


async def _form(request: web.Request) -> dict[str, str]:
    return {key: str(value) for key, value in (await request.post()).items()}


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _form(request)
    try:
        state.tokens.check_client(*_client(request, form))
    except InvalidClient:
        return _oauth_error("invalid_client", None, 401)
    grant_type = form.get("grant_type", "")
    include_hard = request.headers.get(HARD_EXPIRY_HEADER, "").strip().lower() == "true"
    realm_id = state.tokens.realm_of(form.get("refresh_token") or form.get("code") or "")
    if realm_id is not None:
        request[REALM] = realm_id
    try:
        if grant_type == "refresh_token":
            if not form.get("refresh_token"):
                return _oauth_error("invalid_request", "refresh_token is missing", 400)
            body = state.tokens.refresh(form["refresh_token"], include_hard_expiry=include_hard)
        elif grant_type == "authorization_code":
            if not form.get("code"):
                return _oauth_error("invalid_request", "code is missing", 400)
            body = state.tokens.exchange_code(form["code"], include_hard_expiry=include_hard)
        else:
            return _oauth_error("unsupported_grant_type", None, 400)
    except InvalidGrant as error:
        return _oauth_error("invalid_grant", str(error), 400)
    response = json_response(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


async def _revoke_form(request: web.Request) -> dict[str, str] | None:
    """Intuit's clients send JSON; form bodies are taken too. None: a body that is neither."""
    if request.content_type != "application/json":
        return await _form(request)
    try:
        raw = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return None
    return {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else None


async def revoke(request: web.Request) -> web.Response:
    """200 for a live token, whose whole grant ends; 400 for one already revoked, expired or
    unknown, as Intuit answers (a client must forget its tokens either way)."""
    state = request.app[STATE]
    form = await _revoke_form(request)
    token = (form or {}).get("token", "")
    info = state.tokens.identify(token)
    if info.realm_id is not None:
        request[REALM] = info.realm_id
    if form is None or not token:
        response = _oauth_error("invalid_request", "token is missing", 400)
    else:
        try:
            state.tokens.check_client(*_client(request, form))
        except InvalidClient:
            response = _oauth_error("invalid_client", None, 401)
        else:
            if state.tokens.revoke_token(token).live:
                response = web.Response(status=200)
            else:
                description = "Token is invalid, expired or already revoked"
                response = _oauth_error("invalid_token", description, 400)
    state.revocations.add(realm_id=info.realm_id, token_kind=info.kind, status=response.status)
    return response


async def discovery(request: web.Request) -> web.Response:
    """Lets Intuit's own OAuth client (whose `environment` may be a discovery URL) find us."""
    base = str(request.url.origin())
    return json_response(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}{AUTHORIZE_PATH}",
            "token_endpoint": f"{base}{TOKEN_PATH}",
            "revocation_endpoint": f"{base}{REVOKE_PATH}",
            "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
            "jwks_uri": f"{base}/op/v1/jwks",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post(TOKEN_PATH, token, name="token")
    app.router.add_post(REVOKE_PATH, revoke, name="revoke")
    app.router.add_post(REVOKE_PATH_V1, revoke, name="revoke-v1")
    for path in ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration"):
        app.router.add_get(path, discovery, name=path.rsplit("/", 1)[1].replace("_", "-"))
