"""The connections' durable state: per instance its company and status, single-use connect links
and OAuth `state` values (both kept only as hashes). The SQL lives here; the outbox runs it."""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import msgspec

from qbo_events.connect.links import Grant, Verdict, check_grant
from qbo_events.events import ConnectionStatus
from qbo_events.quickbooks.oauth import Tokens

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS connections (
    instance TEXT PRIMARY KEY,
    realm_id TEXT NOT NULL,
    company_name TEXT,
    status TEXT NOT NULL,
    connected_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connect_links (
    token_hash TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS oauth_states (
    state_hash TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    realm_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
) WITHOUT ROWID;
"""

# The stored statuses: ConnectionStatus's two lasting ones, and a disconnect's.
CONNECTED: Final = "connected"
NEEDS_REAUTHORIZATION: Final = "needs_reauthorization"
DISCONNECTED: Final = "disconnected"


class Database(Protocol):
    """What the outbox offers its neighbours: durable writes and quick reads."""

    async def execute(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    def query(self, op: Callable[[sqlite3.Connection], T]) -> T: ...


class ConnectionRow(msgspec.Struct, frozen=True):
    instance: str
    realm_id: str
    company_name: str | None
    status: str  # CONNECTED | NEEDS_REAUTHORIZATION | DISCONNECTED
    connected_at: float
    updated_at: float


class StateGrant(msgspec.Struct, frozen=True):
    """An OAuth `state` that passed: whom the redirect is for, and what it must match."""

    instance: str
    realm_id: str  # "" unless a reconnect bound it to the company that asked
    redirect_uri: str


class ConnectionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- connect links and states ----------------------------------------------------------

    async def add_link(self, token_hash: str, instance: str, now: float, valid: float) -> None:
        await self._db.execute(
            lambda conn: conn.execute(
                "INSERT INTO connect_links (token_hash, instance, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, instance, now, now + valid),
            )
        )

    async def use_link(self, token_hash: str, now: float) -> tuple[Verdict, str]:
        """Mark the link used if it may be; its verdict and instance ("" when unknown)."""

        def op(conn: sqlite3.Connection) -> tuple[Verdict, str]:
            row = conn.execute(
                "SELECT instance, expires_at, used_at FROM connect_links WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            grant = None if row is None else Grant(row[0], row[1], row[2])
            verdict = check_grant(grant, now)
            if verdict is Verdict.OK:
                conn.execute(
                    "UPDATE connect_links SET used_at = ? WHERE token_hash = ?", (now, token_hash)
                )
            return verdict, "" if grant is None else grant.instance

        return await self._db.execute(op)

    async def add_state(self, state_hash: str, grant: StateGrant, now: float, valid: float) -> None:
        await self._db.execute(
            lambda conn: conn.execute(
                "INSERT INTO oauth_states (state_hash, instance, realm_id, redirect_uri,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (state_hash, grant.instance, grant.realm_id, grant.redirect_uri, now, now + valid),
            )
        )

    async def use_state(self, state_hash: str, now: float) -> tuple[Verdict, StateGrant | None]:
        def op(conn: sqlite3.Connection) -> tuple[Verdict, StateGrant | None]:
            row = conn.execute(
                "SELECT instance, realm_id, redirect_uri, expires_at, used_at FROM oauth_states"
                " WHERE state_hash = ?",
                (state_hash,),
            ).fetchone()
            verdict = check_grant(None if row is None else Grant(row[0], row[3], row[4]), now)
            if verdict is not Verdict.OK:
                return verdict, None
            conn.execute(
                "UPDATE oauth_states SET used_at = ? WHERE state_hash = ?", (now, state_hash)
            )
            # Spent and expired rows are no use to anyone after a day; keep the table small.
            conn.execute("DELETE FROM oauth_states WHERE expires_at < ?", (now - 86400,))
            conn.execute("DELETE FROM connect_links WHERE expires_at < ?", (now - 86400,))
            return verdict, StateGrant(row[0], row[1], row[2])

        return await self._db.execute(op)

    # -- connections -----------------------------------------------------------------------

    def connections(self) -> dict[str, ConnectionRow]:
        rows = self._db.query(
            lambda conn: conn.execute(
                "SELECT instance, realm_id, company_name, status, connected_at, updated_at"
                " FROM connections"
            ).fetchall()
        )
        return {row[0]: ConnectionRow(*row) for row in rows}

    def changed_marker(self) -> tuple[float, int]:
        """Changes whenever any connection row does, whichever process wrote it."""
        row = self._db.query(
            lambda conn: conn.execute(
                "SELECT COALESCE(MAX(updated_at), 0), COUNT(*) FROM connections"
            ).fetchone()
        )
        return float(row[0]), int(row[1])

    async def connect(
        self, instance: str, realm_id: str, company_name: str, tokens: Tokens, now: float
    ) -> tuple[ConnectionStatus, ConnectionRow]:
        """Store the new tokens and the connection in one transaction; the status it brings
        (`restored` after a lost grant or a disconnect of the same company) and the new row."""
        body = msgspec.json.encode(tokens)

        def op(conn: sqlite3.Connection) -> tuple[ConnectionStatus, ConnectionRow]:
            old = conn.execute(
                "SELECT realm_id, status FROM connections WHERE instance = ?", (instance,)
            ).fetchone()
            restored = old is not None and old[0] == realm_id and old[1] != CONNECTED
            row = ConnectionRow(instance, realm_id, company_name or None, CONNECTED, now, now)
            conn.execute(
                "INSERT OR REPLACE INTO connections (instance, realm_id, company_name, status,"
                " connected_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (instance, realm_id, row.company_name, CONNECTED, now, now),
            )
            # The outbox's token row, written here so that tokens and realm land together.
            conn.execute(
                "INSERT OR REPLACE INTO tokens (instance, body, updated_at) VALUES (?, ?, ?)",
                (instance, body, now),
            )
            status = ConnectionStatus.RESTORED if restored else ConnectionStatus.CONNECTED
            return status, row

        return await self._db.execute(op)

    async def lost(self, instance: str, realm_id: str, now: float) -> ConnectionRow | None:
        """Mark the grant dead; the row as it was when this changed it, None when it was
        already so (or disconnected): a loss is announced once, across restarts too."""

        def op(conn: sqlite3.Connection) -> ConnectionRow | None:
            row = conn.execute(
                "SELECT instance, realm_id, company_name, status, connected_at, updated_at"
                " FROM connections WHERE instance = ?",
                (instance,),
            ).fetchone()
            if row is None:
                # A company connected by a configured refresh token: its loss is news too.
                old = ConnectionRow(instance, realm_id, None, CONNECTED, 0.0, 0.0)
                conn.execute(
                    "INSERT INTO connections (instance, realm_id, company_name, status,"
                    " connected_at, updated_at) VALUES (?, ?, NULL, ?, 0, ?)",
                    (instance, realm_id, NEEDS_REAUTHORIZATION, now),
                )
                return old
            old = ConnectionRow(*row)
            if old.status != CONNECTED:
                return None
            conn.execute(
                "UPDATE connections SET status = ?, updated_at = ? WHERE instance = ?",
                (NEEDS_REAUTHORIZATION, now, instance),
            )
            return old

        return await self._db.execute(op)

    async def disconnect(
        self, instance: str, realm_id: str, now: float, *, forget_tokens: bool
    ) -> None:
        """Mark the instance disconnected (a daemon stops polling it) and, with
        `forget_tokens`, delete its tokens. The row stays, so that a later connect of the same
        company is announced as restored."""

        def op(conn: sqlite3.Connection) -> None:
            if forget_tokens:
                conn.execute("DELETE FROM tokens WHERE instance = ?", (instance,))
            conn.execute(
                "UPDATE connections SET status = ?, updated_at = ? WHERE instance = ?",
                (DISCONNECTED, now, instance),
            )
            conn.execute(
                "INSERT OR IGNORE INTO connections (instance, realm_id, company_name, status,"
                " connected_at, updated_at) VALUES (?, ?, NULL, ?, 0, ?)",
                (instance, realm_id, DISCONNECTED, now),
            )

        await self._db.execute(op)


def read_connections(path: Path) -> dict[str, ConnectionRow]:
    """The connection rows of the outbox at `path`, read-only, for `check`: empty when there is
    no outbox (or no table) yet."""
    if not path.is_file():
        return {}
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(
                "SELECT instance, realm_id, company_name, status, connected_at, updated_at"
                " FROM connections"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {row[0]: ConnectionRow(*row) for row in rows}
