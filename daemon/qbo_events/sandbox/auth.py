"""OAuth 2.0 as QuickBooks runs it: client check, rotating refresh tokens, one-time codes."""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple


class InvalidClient(Exception):
    """Wrong or missing client credentials (401 `invalid_client`)."""


class InvalidGrant(Exception):
    """A refresh token or code that is unknown, superseded, revoked or already used."""


class Unauthorized(Exception):
    """A bearer token the API refuses; the message is the 401 body's `detail`."""


HARD_LIFETIME: Final = 157_680_000  # five years: no refresh token outlives it, used or not
TokenKind = Literal["refresh", "access", "unknown"]


class TokenInfo(NamedTuple):
    """What a token is, as the revoke endpoint needs to know it."""

    kind: TokenKind
    realm_id: str | None
    live: bool


@dataclass
class _RefreshToken:
    realm_id: str
    issued_at: float
    chain: str  # the chain's first token: every rotation of one grant shares it
    hard_expires_at: float  # fixed for the chain when the grant is made; refreshes do not move it
    predecessor: str | None = None
    successor: str | None = None
    superseded_at: float = 0.0
    successor_used: bool = False
    revoked: bool = False


@dataclass
class _AccessToken:
    realm_id: str
    expires_at: float
    chain: str  # the refresh-token chain it was issued from


class Tokens:
    """All tokens of the sandbox's one app, for every realm.

    Rotation: a refresh returns a new refresh token. The old one keeps working (and keeps
    returning that same successor, as QuickBooks does within a day) until its successor has been
    used once or `grace` seconds have passed; after that it is `invalid_grant`. Every chain also
    has a hard expiry, fixed when the grant is made (`hard_lifetime` later) and inherited by each
    successor, after which it is `invalid_grant` however recently it was used.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        access_lifetime: float,
        refresh_lifetime: int,
        grace: float,
        rotate: bool,
        hard_lifetime: float = HARD_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._access_lifetime = access_lifetime
        self._refresh_lifetime = refresh_lifetime
        self._grace = grace
        self._rotate = rotate
        self._hard_lifetime = hard_lifetime
        self._clock = clock
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}
        self._codes: dict[str, str] = {}  # code -> realm
        self._spent_codes: dict[str, str] = {}  # code -> the refresh token it gave
        self.refreshes = 0

    def check_client(self, client_id: str, client_secret: str) -> None:
        good_id = hmac.compare_digest(client_id.encode(), self._client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        if not (good_id and good_secret):
            raise InvalidClient

    def add_refresh_token(self, realm_id: str, token: str | None = None) -> str:
        """A new grant: the first token of a chain, whose hard expiry starts now."""
        token = token or _new_refresh_token()
        now = self._clock()
        self._refresh[token] = _RefreshToken(realm_id, now, token, now + self._hard_lifetime)
        return token

    def add_auth_code(self, realm_id: str, code: str | None = None) -> str:
        code = code or "AB11" + secrets.token_urlsafe(24)
        self._codes[code] = realm_id
        return code

    def exchange_code(self, code: str, *, include_hard_expiry: bool = False) -> dict[str, Any]:
        if code in self._spent_codes:
            # Intuit: re-using a code invalidates the tokens issued for it.
            self._revoke_chain(self._refresh[self._spent_codes[code]].chain)
            raise InvalidGrant("Invalid authorization code")
        realm_id = self._codes.pop(code, None)
        if realm_id is None:
            raise InvalidGrant("Invalid authorization code")
        refresh_token = self.add_refresh_token(realm_id)
        self._spent_codes[code] = refresh_token
        return self._answer(self._refresh[refresh_token], refresh_token, include_hard_expiry)

    def refresh(self, token: str, *, include_hard_expiry: bool = False) -> dict[str, Any]:
        """The token answer; `include_hard_expiry` adds `x_refresh_token_hard_expires_in`."""
        record = self._refresh.get(token)
        if record is not None and not record.revoked and self._hard_expired(record):
            raise InvalidGrant("Refresh token has expired")
        if record is None or not self._valid(record):
            raise InvalidGrant("Incorrect or invalid refresh token")
        if record.predecessor is not None:
            self._refresh[record.predecessor].successor_used = True
        if not self._rotate:
            new_token = token
        elif record.successor is not None:
            new_token = record.successor
        else:
            new_token = _new_refresh_token()
            self._refresh[new_token] = _RefreshToken(
                record.realm_id,
                self._clock(),
                record.chain,
                record.hard_expires_at,
                predecessor=token,
            )
            record.successor = new_token
            record.superseded_at = self._clock()
        self.refreshes += 1
        return self._answer(self._refresh[new_token], new_token, include_hard_expiry)

    def realm_of(self, grant: str) -> str | None:
        """The realm a refresh token or an authorization code was issued for, valid or not."""
        record = self._refresh.get(grant)
        return record.realm_id if record is not None else self._codes.get(grant)

    def authenticate(self, authorization: str | None) -> str:
        """The realm the bearer token was issued for; raise Unauthorized otherwise."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("Malformed bearer token: too short or too long")
        token = authorization[7:].strip()
        access = self._access.get(token)
        if access is None:
            raise Unauthorized("Malformed bearer token: too short or too long")
        if self._clock() >= access.expires_at:
            raise Unauthorized(f"Token expired: {token[:12]}")
        return access.realm_id

    def expire_access_tokens(self, realm_id: str | None = None) -> int:
        expired = 0
        for access in self._access.values():
            if realm_id is None or access.realm_id == realm_id:
                access.expires_at = min(access.expires_at, self._clock())
                expired += 1
        return expired

    def revoke(self, realm_id: str | None = None) -> tuple[int, int]:
        """The connection is cut: refresh tokens get invalid_grant and bearers stop working.

        Returns how many live refresh tokens and access tokens died."""
        refresh = 0
        for record in self._refresh.values():
            if realm_id is None or record.realm_id == realm_id:
                refresh += self._valid(record)
                record.revoked = True
        now = self._clock()
        access = sum(
            1
            for a in self._access.values()
            if (realm_id is None or a.realm_id == realm_id) and a.expires_at > now
        )
        self.expire_access_tokens(realm_id)
        return refresh, access

    def identify(self, token: str) -> TokenInfo:
        """Which kind of token this is, for which realm, and whether it still works."""
        record = self._refresh.get(token)
        if record is not None:
            return TokenInfo("refresh", record.realm_id, self._valid(record))
        access = self._access.get(token)
        if access is not None:
            return TokenInfo("access", access.realm_id, self._clock() < access.expires_at)
        return TokenInfo("unknown", None, False)

    def revoke_token(self, token: str) -> TokenInfo:
        """What the revoke endpoint does: a live refresh or access token ends its whole grant
        (every token of its chain and the access tokens issued from it); a dead one changes
        nothing and is reported as not live, which QuickBooks answers with 400."""
        info = self.identify(token)
        if info.live:
            record = self._refresh.get(token)
            self._revoke_chain(record.chain if record is not None else self._access[token].chain)
        return info

    def set_hard_expiry(self, realm_id: str, seconds: float) -> int:
        """Every chain of the realm now hard-expires `seconds` from now; returns how many live
        chains that touched (revoked and expired ones are left as they are)."""
        deadline = self._clock() + seconds
        chains: set[str] = set()
        for record in self._refresh.values():
            if record.realm_id == realm_id and not record.revoked:
                record.hard_expires_at = deadline
                chains.add(record.chain)
        return len(chains)

    def hard_expires_in(self) -> dict[str, list[int]]:
        """Per realm, the seconds left before each current chain's hard expiry."""
        now = self._clock()
        left: dict[str, list[int]] = {}
        for token in (t for tokens in self.current_refresh_tokens().values() for t in tokens):
            record = self._refresh[token]
            left.setdefault(record.realm_id, []).append(_seconds(record.hard_expires_at - now))
        return left

    def current_refresh_tokens(self) -> dict[str, list[str]]:
        """Per realm, the newest valid token of each chain (what a client should hold)."""
        current: dict[str, list[str]] = {}
        for token, record in self._refresh.items():
            if self._valid(record) and record.successor is None:
                current.setdefault(record.realm_id, []).append(token)
        return current

    def _valid(self, record: _RefreshToken) -> bool:
        now = self._clock()
        if record.revoked or now >= record.issued_at + self._refresh_lifetime:
            return False
        if self._hard_expired(record):
            return False
        if record.successor is None:
            return True
        return not record.successor_used and now < record.superseded_at + self._grace

    def _hard_expired(self, record: _RefreshToken) -> bool:
        return self._clock() >= record.hard_expires_at

    def _revoke_chain(self, chain: str) -> None:
        for record in self._refresh.values():
            if record.chain == chain:
                record.revoked = True
        now = self._clock()
        for access in self._access.values():
            if access.chain == chain:
                access.expires_at = min(access.expires_at, now)

    def _answer(
        self, record: _RefreshToken, refresh_token: str, include_hard_expiry: bool = False
    ) -> dict[str, Any]:
        now = self._clock()
        if len(self._access) > 1000:
            self._access = {t: a for t, a in self._access.items() if a.expires_at > now}
        access_token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2" + secrets.token_urlsafe(48)
        self._access[access_token] = _AccessToken(
            record.realm_id, now + self._access_lifetime, record.chain
        )
        hard_left = _seconds(record.hard_expires_at - now)
        body: dict[str, Any] = {
            "token_type": "bearer",
            "expires_in": max(1, round(self._access_lifetime)),
            "refresh_token": refresh_token,
            "x_refresh_token_expires_in": min(self._refresh_lifetime, hard_left),
            "access_token": access_token,
        }
        if include_hard_expiry:
            body["x_refresh_token_hard_expires_in"] = hard_left
        return body


def _new_refresh_token() -> str:
    return "AB11" + secrets.token_urlsafe(36)


def _seconds(left: float) -> int:
    """Whole seconds left, never negative and never more than there are."""
    return max(0, math.floor(left))
