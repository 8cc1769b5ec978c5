"""The quarantine's operations: list, show and retry the signed webhook bodies not understood.

Plain async functions of the Outbox and the Config returning msgspec Structs, so that the CLI
(a separate process beside a running daemon) and the admin API run the same code. The SQL runs
through `Outbox.query` and `Outbox.execute`; the events a retry finds go in through
`Outbox.accept`, deduplicated like any others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import orjson

from qbo_events.config import Config
from qbo_events.connect.status import effective
from qbo_events.connect.store import ConnectionStore
from qbo_events.events import Event
from qbo_events.normalize import WebhookPayloadError, parse_webhook
from qbo_events.outbox import Outbox
from qbo_events.routing import Routes

# Bodies parsed per step of a retry: bounds the memory a large quarantine takes, and the events
# one accept stores.
_BATCH: Final = 100


class Quarantined(msgspec.Struct, frozen=True, kw_only=True):
    """One quarantined body, as `quarantine list` shows it."""

    id: int
    received_at: float  # unix seconds
    reason: str
    size: int  # bytes


class Shown(msgspec.Struct, frozen=True, kw_only=True):
    entry: Quarantined
    body: str  # pretty-printed when the body is JSON, else its text (bad UTF-8 escaped)
    is_json: bool


class StillFailing(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    reason: str  # the parser's answer this time


class Retried(msgspec.Struct, frozen=True, kw_only=True):
    """What a retry did. Bodies that now parse left the quarantine; the rest stay."""

    tried: int
    parsed: list[int]  # ids of the bodies that now parse, removed from the quarantine
    failing: list[StillFailing]
    events: int  # events their entities became, over all instances
    new: int  # of those, events the outbox had not seen (the rest were duplicates)
    unrouted: int  # entities that reached no instance (realm not served, resource not taken)
    instances: list[str]  # instances with new events: a daemon in this process wakes them


async def list_quarantined(outbox: Outbox, *, limit: int | None = None) -> list[Quarantined]:
    """The quarantined bodies, oldest first, without their bodies."""

    def op(conn: sqlite3.Connection) -> list[Any]:
        return conn.execute(
            "SELECT id, received_at, reason, length(body) FROM quarantine ORDER BY id LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()

    return [_entry(*row) for row in outbox.query(op)]


async def count(outbox: Outbox) -> int:
    def op(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])

    return outbox.query(op)


async def show(outbox: Outbox, quarantine_id: int) -> Shown | None:
    """One quarantined body, or None when there is none with that id."""

    def op(conn: sqlite3.Connection) -> Any:
        return conn.execute(
            "SELECT id, received_at, reason, body FROM quarantine WHERE id = ?", (quarantine_id,)
        ).fetchone()

    row = outbox.query(op)
    if row is None:
        return None
    rid, received_at, reason, body = row
    text, is_json = readable(bytes(body))
    return Shown(entry=_entry(rid, received_at, reason, len(body)), body=text, is_json=is_json)


def readable(body: bytes) -> tuple[str, bool]:
    """The body as text for a person: indented when it is JSON."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "backslashreplace"), False
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode(), True


async def retry(outbox: Outbox, config: Config, quarantine_id: int | None = None) -> Retried:
    """Parse the quarantined bodies (one, or all) again with the listener's parser and routing;
    accept the events of those that parse and remove them, and keep the rest with the reason
    they fail for now.

    The events are accepted before their bodies are removed, in two transactions: a crash in
    between leaves a body that a second retry accepts again, as duplicates the dedupe drops."""
    # The routes the listener uses: realms learned by connecting included.
    routes = Routes(effective(config, ConnectionStore(outbox).connections()))
    parsed: list[int] = []
    failing: list[StillFailing] = []
    events_total = new_total = unrouted = 0
    instances: set[str] = set()
    after = 0
    while True:
        rows = outbox.query(_batch(after, quarantine_id))
        if not rows:
            break
        after = rows[-1][0]
        now_parsed: list[int] = []
        now_failing: list[StillFailing] = []
        events: list[Event] = []
        for rid, body in rows:
            try:
                changes = parse_webhook(bytes(body))
            except WebhookPayloadError as exc:
                now_failing.append(StillFailing(id=rid, reason=str(exc)))
                continue
            routed = routes.route(changes)
            events += routed.events
            unrouted += routed.unknown + routed.unsubscribed
            now_parsed.append(rid)
        if events:
            new_total += await outbox.accept(events)
            instances.update(e.instance for e in events)
        await outbox.execute(_settle(now_parsed, now_failing))
        events_total += len(events)
        parsed += now_parsed
        failing += now_failing
        if quarantine_id is not None:
            break
    return Retried(
        tried=len(parsed) + len(failing),
        parsed=parsed,
        failing=failing,
        events=events_total,
        new=new_total,
        unrouted=unrouted,
        instances=sorted(instances),
    )


def _entry(rid: int, received_at: float, reason: str, size: int) -> Quarantined:
    return Quarantined(id=rid, received_at=received_at, reason=reason, size=size)


def _batch(after: int, only: int | None) -> Callable[[sqlite3.Connection], list[Any]]:
    def op(conn: sqlite3.Connection) -> list[Any]:
        if only is not None:
            return conn.execute("SELECT id, body FROM quarantine WHERE id = ?", (only,)).fetchall()
        return conn.execute(
            "SELECT id, body FROM quarantine WHERE id > ? ORDER BY id LIMIT ?", (after, _BATCH)
        ).fetchall()

    return op


def _settle(
    parsed: Sequence[int], failing: Sequence[StillFailing]
) -> Callable[[sqlite3.Connection], None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM quarantine WHERE id = ?", [(rid,) for rid in parsed])
        conn.executemany(
            "UPDATE quarantine SET reason = ? WHERE id = ?", [(f.reason, f.id) for f in failing]
        )

    return op
