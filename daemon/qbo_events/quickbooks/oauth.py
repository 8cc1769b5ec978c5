"""OAuth 2.0 for QuickBooks: per-instance refresh and rotation, the code exchange, base URLs."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import aiohttp
import msgspec
import structlog

from qbo_events.errors import (
    NeedsReauthorization,
    QuickBooksAuthError,
    QuickBooksError,
    QuickBooksRateLimited,
    QuickBooksUnavailable,
)
from qbo_events.sinks.retry import parse_retry_after

DEFAULT_TOKEN_URL: Final = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
API_BASES: Final = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
# Refresh this long before the access token expires, so no request carries one that dies in flight.
REFRESH_MARGIN: Final = 300.0
_TOKEN_TIMEOUT: Final = aiohttp.ClientTimeout(total=30)
# A 429 without a readable Retry-After waits as long as the API's 429s do (SPEC 7.1: 60 s).
_THROTTLED_WAIT: Final = 60.0

log = structlog.get_logger(__name__)


class Tokens(msgspec.Struct, frozen=True):
    """One instance's tokens; the expiries are unix times, 0 when unknown."""

    refresh_token: str
    access_token: str = ""
    access_expires_at: float = 0.0
    refresh_expires_at: float = 0.0
    # The refresh token's five-year hard expiry (x_refresh_token_hard_expires_in); 0 unknown.
    hard_expires_at: float = 0.0

    def __repr__(self) -> str:
        # The default repr would print both tokens into any log line or traceback that shows us.
        return (
            f"Tokens(access_expires_at={self.access_expires_at}, "
            f"refresh_expires_at={self.refresh_expires_at})"
        )


class TokenStore(Protocol):
    """Durable home of the rotated tokens; `save_tokens` returns only once they are committed."""

    async def load_tokens(self, instance: str) -> Tokens | None: ...

    async def save_tokens(self, instance: str, tokens: Tokens) -> None: ...


class _TokenAnswer(msgspec.Struct):
    access_token: str
    refresh_token: str = ""
    expires_in: float = 3600.0
    x_refresh_token_expires_in: float = 0.0
    x_refresh_token_hard_expires_in: float = 0.0


class _TokenRefusal(msgspec.Struct):
    error: str = ""
    error_description: str = ""


def token_url_for(configured: str) -> str:
    """The configured token endpoint, else Intuit's (the same for sandbox and production)."""
    return configured.strip() or DEFAULT_TOKEN_URL


def api_base_for(environment: str, override: str) -> str:
    """Scheme and host of the accounting API, without `/v3`; a configured override wins."""
    if override.strip():
        return override.strip().rstrip("/")
    try:
        return API_BASES[environment]
    except KeyError:
        raise ValueError(f"unknown QuickBooks environment {environment!r}") from None


async def exchange_code(
    http: aiohttp.ClientSession,
    *,
    token_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
) -> Tokens:
    """Trade an authorization code (from the consent redirect) for the first tokens.

    A code works once: QuickBooks revokes what it issued if it is presented again.
    """
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    return await _token_request(http, token_url, client_id, client_secret, form, time.time)


class TokenManager:
    """The access token of one instance, refreshed one at a time, rotations saved before use."""

    def __init__(
        self,
        *,
        instance: str,
        http: aiohttp.ClientSession,
        token_url: str,
        client_id: str,
        client_secret: str,
        store: TokenStore,
        initial_refresh_token: str,
        clock: Callable[[], float] = time.time,
        count_call: Callable[[str, str], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.instance = instance
        self._on_refused = on_refused  # told, as (instance), when QuickBooks says invalid_grant
        self._count_call = count_call  # told of each token request, as (instance, "token")
        self._http = http
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._store = store
        self._initial_refresh_token = initial_refresh_token
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tokens: Tokens | None = None  # None until the store has been read
        self._refused: str | None = None  # the refresh token that got invalid_grant
        self._rotation: asyncio.Task[Tokens] | None = None
        self._margin = REFRESH_MARGIN
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_refresh_at = 0.0

    @property
    def needs_reauthorization(self) -> bool:
        """True after invalid_grant, until a new refresh token appears in the store."""
        return self._refused is not None

    @property
    def expires_at(self) -> float:
        """Unix time the current access token expires; 0 when there is none."""
        return self._tokens.access_expires_at if self._tokens else 0.0

    @property
    def hard_expires_at(self) -> float:
        """Unix time the refresh token's grant ends for good (five years); 0 when unknown."""
        return self._tokens.hard_expires_at if self._tokens else 0.0

    def stats(self) -> dict[str, object]:
        """State for /status and /metrics; never a token."""
        tokens = self._tokens
        return {
            "instance": self.instance,
            "needs_reauthorization": self.needs_reauthorization,
            "access_expires_at": tokens.access_expires_at if tokens else 0.0,
            "refresh_expires_at": tokens.refresh_expires_at if tokens else 0.0,
            "refresh_hard_expires_at": self.hard_expires_at,
            "refresh_token_days_left": (
                round((self.hard_expires_at - self._clock()) / 86400, 1)
                if self.hard_expires_at
                else None
            ),
            "refreshes": self.refreshes,
            "refresh_failures": self.refresh_failures,
            "last_refresh_at": self.last_refresh_at,
        }

    def __repr__(self) -> str:
        state = "needs-reauthorization" if self.needs_reauthorization else "ok"
        return f"<TokenManager {self.instance} {state} expires_at={self.expires_at:.0f}>"

    async def access_token(self) -> str:
        """A bearer token good for a while yet (REFRESH_MARGIN), refreshing it when it is not."""
        tokens = self._tokens
        if tokens is not None and self._fresh(tokens) and not self.needs_reauthorization:
            return tokens.access_token
        async with self._lock:
            tokens = await self._current()
            if self._fresh(tokens):
                return tokens.access_token
            return (await self._rotate(tokens)).access_token

    async def refresh(self, rejected: str | None = None) -> str:
        """After a 401 on `rejected`: refresh, unless another caller already replaced that token."""
        async with self._lock:
            tokens = await self._current()
            replaced = rejected is not None and tokens.access_token != rejected
            if replaced and self._fresh(tokens):
                return tokens.access_token
            return (await self._rotate(tokens)).access_token

    def _fresh(self, tokens: Tokens) -> bool:
        return bool(tokens.access_token) and self._clock() < tokens.access_expires_at - self._margin

    def forget(self) -> None:
        """Read the store again at the next use: `qbo-events authorize` may have written to it."""
        self._tokens = None

    async def _current(self) -> Tokens:
        """The tokens to use, read from the store on first use and while re-authorization is due."""
        if self._rotation is not None:
            # A caller was cancelled while its rotation ran on; wait for it so two never overlap.
            await asyncio.wait([self._rotation])
            self._rotation = None
        if self._tokens is None or self._refused is not None:
            stored = await self._store.load_tokens(self.instance)
            if self._tokens is None:
                self._tokens = stored or Tokens(refresh_token=self._initial_refresh_token)
            if self._refused is not None:
                # `qbo-events authorize` may have stored a new refresh token meanwhile.
                if stored is None or stored.refresh_token in (self._refused, ""):
                    raise NeedsReauthorization(
                        f"instance {self.instance}: QuickBooks refused the refresh token "
                        "(invalid_grant); run `qbo-events authorize` to connect the company again"
                    )
                self._refused = None
                self._tokens = stored
        return self._tokens

    async def _rotate(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            # Nothing configured and nothing stored: the company was never connected.
            self._refused = ""
            raise NeedsReauthorization(
                f"instance {self.instance}: no refresh token; run `qbo-events authorize`"
            )
        # The exchange and the save run as one shielded task: once Intuit has issued a new refresh
        # token, the old one is on its way out, so a cancelled caller must not lose the new one.
        task = asyncio.ensure_future(self._exchange_and_save(tokens))
        task.add_done_callback(_retrieve)
        self._rotation = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._rotation = None

    async def _exchange_and_save(self, tokens: Tokens) -> Tokens:
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        if self._count_call is not None:
            self._count_call(self.instance, "token")
        try:
            fresh = await _token_request(
                self._http,
                self._token_url,
                self._client_id,
                self._client_secret,
                form,
                self._clock,
                previous_refresh_token=tokens.refresh_token,
                previous_hard_expires_at=tokens.hard_expires_at,
            )
        except NeedsReauthorization:
            self.refresh_failures += 1
            self._refused = tokens.refresh_token
            # Forget the access token too, so every caller comes through the lock and sees the flag.
            self._tokens = Tokens(refresh_token=tokens.refresh_token)
            log.error("quickbooks.needs_reauthorization", instance=self.instance)
            if self._on_refused is not None:
                self._on_refused(self.instance)
            raise
        except QuickBooksError:
            self.refresh_failures += 1
            raise
        await self._store.save_tokens(self.instance, fresh)
        self._tokens = fresh
        self.refreshes += 1
        self.last_refresh_at = self._clock()
        # Tokens shorter-lived than twice the margin (test companies) would otherwise be refreshed
        # before every single call.
        self._margin = min(REFRESH_MARGIN, (fresh.access_expires_at - self.last_refresh_at) / 2)
        log.info(
            "quickbooks.token_refreshed",
            instance=self.instance,
            rotated=fresh.refresh_token != tokens.refresh_token,
            expires_in=round(fresh.access_expires_at - self.last_refresh_at),
        )
        return fresh


def _retrieve(task: asyncio.Task[Tokens]) -> None:
    # A rotation whose caller was cancelled has no one to read its error; read it here so asyncio
    # does not report it as never retrieved.
    if not task.cancelled():
        task.exception()


async def _token_request(
    http: aiohttp.ClientSession,
    token_url: str,
    client_id: str,
    client_secret: str,
    form: Mapping[str, str],
    clock: Callable[[], float],
    *,
    previous_refresh_token: str = "",
    previous_hard_expires_at: float = 0.0,
) -> Tokens:
    """POST one grant to the token endpoint; translate every failure into our errors."""
    sent_at = clock()
    try:
        async with http.post(
            token_url,
            data=dict(form),
            headers={
                "Authorization": _basic_auth(client_id, client_secret),
                "Accept": "application/json",
                # Asks for x_refresh_token_hard_expires_in: when the grant ends for good.
                "x-include-refresh-token-hard-expires-in": "true",
            },
            allow_redirects=False,
            timeout=_TOKEN_TIMEOUT,
        ) as response:
            status = response.status
            tid = response.headers.get("intuit_tid", "")
            retry_after = response.headers.get("Retry-After", "")
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QuickBooksUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None

    if status == 200:
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
        except msgspec.DecodeError:
            raise QuickBooksUnavailable(
                "token endpoint answered 200 without a token", status=status, intuit_tid=tid
            ) from None
        return Tokens(
            # QuickBooks always sends one, but keeping the old token beats storing an empty one.
            refresh_token=answer.refresh_token or previous_refresh_token,
            access_token=answer.access_token,
            access_expires_at=sent_at + answer.expires_in,
            refresh_expires_at=(
                sent_at + answer.x_refresh_token_expires_in
                if answer.x_refresh_token_expires_in
                else 0.0
            ),
            hard_expires_at=(
                sent_at + answer.x_refresh_token_hard_expires_in
                if answer.x_refresh_token_hard_expires_in
                else previous_hard_expires_at
            ),
        )

    try:
        refusal = msgspec.json.decode(body, type=_TokenRefusal)
    except msgspec.DecodeError:
        refusal = _TokenRefusal()
    # error and error_description are Intuit's fixed texts; they never echo the token sent.
    reason = refusal.error or f"HTTP {status}"
    if refusal.error_description:
        reason = f"{reason}: {refusal.error_description}"
    if refusal.error == "invalid_grant":
        raise NeedsReauthorization(
            f"token endpoint refused the grant ({reason})", status=status, intuit_tid=tid
        )
    if status == 429:
        wait = parse_retry_after(retry_after, time.time())
        raise QuickBooksRateLimited(
            "token endpoint is throttling",
            retry_after=_THROTTLED_WAIT if wait is None else wait,
            intuit_tid=tid,
        )
    if status >= 500:
        raise QuickBooksUnavailable(
            f"token endpoint failed ({reason})", status=status, intuit_tid=tid
        )
    # invalid_client and friends: the app's credentials are wrong, which no retry will cure.
    raise QuickBooksAuthError(f"token endpoint refused ({reason})", status=status, intuit_tid=tid)


def _basic_auth(client_id: str, client_secret: str) -> str:
    # client_secret_basic as Intuit's own clients send it: the raw id and secret, UTF-8.
    pair = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")
