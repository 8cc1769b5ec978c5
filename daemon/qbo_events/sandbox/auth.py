"""OAuth 2.0 as QuickBooks runs it: client check, rotating refresh tokens, one-time codes."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class InvalidClient(Exception):
    """Wrong or missing client credentials (401 `invalid_client`)."""


class InvalidGrant(Exception):
    """A refresh token or code that is unknown, superseded, revoked or already used."""


class Unauthorized(Exception):
    """A bearer token the API refuses; the message is the 401 body's `detail`."""


@dataclass
class _RefreshToken:
    realm_id: str
    issued_at: float
    predecessor: str | None = None
    successor: str | None = None
    superseded_at: float = 0.0
    successor_used: bool = False
    revoked: bool = False


@dataclass
class _AccessToken:
    realm_id: str
    expires_at: float


class Tokens:
    """All tokens of the sandbox's one app, for every realm.

    Rotation: a refresh returns a new refresh token. The old one keeps working (and keeps
    returning that same successor, as QuickBooks does within a day) until its successor has been
    used once or `grace` seconds have passed; after that it is `invalid_grant`.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._access_lifetime = access_lifetime
        self._refresh_lifetime = refresh_lifetime
        self._grace = grace
        self._rotate = rotate
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
        token = token or "AB11" + secrets.token_urlsafe(36)
        self._refresh[token] = _RefreshToken(realm_id, self._clock())
        return token

    def add_auth_code(self, realm_id: str, code: str | None = None) -> str:
        code = code or "AB11" + secrets.token_urlsafe(24)
        self._codes[code] = realm_id
        return code

    def exchange_code(self, code: str) -> dict[str, Any]:
        if code in self._spent_codes:
            # Intuit: re-using a code invalidates the tokens issued for it.
            self._revoke_chain(self._spent_codes[code])
            raise InvalidGrant("Invalid authorization code")
        realm_id = self._codes.pop(code, None)
        if realm_id is None:
            raise InvalidGrant("Invalid authorization code")
        refresh_token = self.add_refresh_token(realm_id)
        self._spent_codes[code] = refresh_token
        return self._answer(realm_id, refresh_token)

    def refresh(self, token: str) -> dict[str, Any]:
        record = self._refresh.get(token)
        if record is None or not self._valid(record):
            raise InvalidGrant("Incorrect or invalid refresh token")
        if record.predecessor is not None:
            self._refresh[record.predecessor].successor_used = True
        if not self._rotate:
            new_token = token
        elif record.successor is not None:
            new_token = record.successor
        else:
            new_token = self.add_refresh_token(record.realm_id)
            self._refresh[new_token].predecessor = token
            record.successor = new_token
            record.superseded_at = self._clock()
        self.refreshes += 1
        return self._answer(record.realm_id, new_token)

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

    def revoke(self, realm_id: str | None = None) -> None:
        """The connection is cut: refresh tokens get invalid_grant and bearers stop working."""
        for record in self._refresh.values():
            if realm_id is None or record.realm_id == realm_id:
                record.revoked = True
        self.expire_access_tokens(realm_id)

    def revoke_token(self, token: str) -> bool:
        record = self._refresh.get(token)
        if record is not None:
            self._revoke_chain(token)
            return True
        access = self._access.get(token)
        if access is not None:
            access.expires_at = min(access.expires_at, self._clock())
            return True
        return False

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
        if record.successor is None:
            return True
        return not record.successor_used and now < record.superseded_at + self._grace

    def _revoke_chain(self, token: str | None) -> None:
        while token is not None:
            record = self._refresh[token]
            record.revoked = True
            token = record.successor

    def _answer(self, realm_id: str, refresh_token: str) -> dict[str, Any]:
        now = self._clock()
        if len(self._access) > 1000:
            self._access = {t: a for t, a in self._access.items() if a.expires_at > now}
        access_token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2" + secrets.token_urlsafe(48)
        self._access[access_token] = _AccessToken(realm_id, now + self._access_lifetime)
        return {
            "token_type": "bearer",
            "expires_in": max(1, round(self._access_lifetime)),
            "refresh_token": refresh_token,
            "x_refresh_token_expires_in": self._refresh_lifetime,
            "access_token": access_token,
        }
