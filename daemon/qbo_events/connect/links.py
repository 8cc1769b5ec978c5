"""Pure: connect-link and `state` tokens and their checks, and the URLs of the connect flow."""

from __future__ import annotations

import enum
import hashlib
import secrets
from typing import Final, NamedTuple
from urllib.parse import urlencode, urlsplit

from qbo_events.config import Config

AUTHORIZE_URL: Final = "https://appcenter.intuit.com/connect/oauth2"
REVOKE_URL: Final = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
SCOPE: Final = "com.intuit.quickbooks.accounting"
CONNECT_PREFIX: Final = "/connect/"
RECONNECT_PATH: Final = "/reconnect"
# A state lives as long as a person may take over Intuit's consent page.
STATE_VALID: Final = 1800.0
# The link a connection event carries waits for a person to read the receiver's alert.
EVENT_LINK_VALID: Final = 86400.0
DEFAULT_LINK_VALID: Final = 3600.0


class Verdict(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


class Grant(NamedTuple):
    """A stored link or state, as far as its check needs it."""

    instance: str
    expires_at: float
    used_at: float | None


def new_token() -> str:
    """256 random bits, URL-safe: a link or a state nobody can guess."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Only this is stored: a copy of the database does not hand out live links."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_grant(grant: Grant | None, now: float) -> Verdict:
    if grant is None:
        return Verdict.UNKNOWN
    if grant.used_at is not None:
        return Verdict.USED
    if now >= grant.expires_at:
        return Verdict.EXPIRED
    return Verdict.OK


def authorize_endpoint(config: Config) -> str:
    """Intuit's consent page, or the sandbox's when quickbooks.api_base_url points at one."""
    base = config.quickbooks.api_base_url.strip().rstrip("/")
    return f"{base}/connect/oauth2" if base else AUTHORIZE_URL


def revoke_endpoint(config: Config) -> str:
    base = config.quickbooks.api_base_url.strip().rstrip("/")
    return f"{base}/v2/oauth2/tokens/revoke" if base else REVOKE_URL


def public_base(config: Config) -> str:
    return config.http.public_base_url.strip().rstrip("/")


def redirect_uri(config: Config) -> str:
    """The URI Intuit sends the browser back to: the registered one, else the listener's own
    path under the public base URL; "" when neither is known."""
    if config.quickbooks.redirect_uri:
        return config.quickbooks.redirect_uri
    base = public_base(config)
    return f"{base}{config.quickbooks.redirect_path}" if base else ""


def connect_link(config: Config, token: str) -> str:
    return f"{public_base(config)}{CONNECT_PREFIX}{token}"


def authorization_url(config: Config, *, redirect_uri: str, state: str) -> str:
    query = urlencode(
        {
            "client_id": config.quickbooks.client_id,
            "scope": SCOPE,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{authorize_endpoint(config)}?{query}"


def registered_local(config: Config) -> tuple[str, int] | None:
    """(path, port) of quickbooks.redirect_uri when it is an http://localhost URI, which
    `connect --local` must then serve as it is (Intuit compares the URI whole)."""
    uri = config.quickbooks.redirect_uri
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in ("localhost", "127.0.0.1"):
        return None
    return parts.path or "/", parts.port or 80


def local_redirect_uri(config: Config, port: int) -> str:
    """The redirect URI of `connect --local` listening on `port`."""
    if registered_local(config) is not None:
        return config.quickbooks.redirect_uri
    return f"http://localhost:{port}{config.quickbooks.redirect_path}"


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `1h`, `2d` -> seconds; ValueError otherwise."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = text.strip().lower()
    factor = units.get(text[-1:])
    number = text[:-1] if factor is not None else text
    value = float(number) * (factor or 1.0)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"not a positive duration: {text!r}")
    return value
