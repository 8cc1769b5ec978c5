"""What the operator asks of deliveries: list them by state, time, instance and object; show one
with every attempt; replay delivered ones. The CLI and the admin API both call these.

Times: an undelivered event is placed by when it was accepted, a delivered one by when it was
delivered. Replayed events are new outbox rows with the same event id and event, delivered through
the normal senders (signed afresh, retried, capped), in their original order per object.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec
import orjson

from qbo_events import qbtime
from qbo_events.config import Config
from qbo_events.events import Event
from qbo_events.outbox import Outbox
from qbo_events.sinks import payload

State = Literal["pending", "retrying", "dead", "delivered", "all"]
STATES: Final = ("pending", "retrying", "dead", "delivered", "all")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_decode_event = msgspec.msgpack.Decoder(Event).decode


class Filter(msgspec.Struct, frozen=True, kw_only=True):
    state: State = "pending"
    since: float | None = None
    until: float | None = None
    instance: str | None = None
    object: str | None = None  # "invoices/123": the Open Connectors type and the object id
    limit: int = 100


class Item(msgspec.Struct, frozen=True, kw_only=True):
    """One event in the outbox or the history, as `deliveries list` shows it."""

    seq: int
    event_id: str
    instance: str
    object_type: str
    object_id: str
    event_type: str
    state: str
    attempts: int
    accepted_at: float
    delivered_at: float | None = None
    next_at: float | None = None
    last_error: str | None = None


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    endpoint: str
    status: int | None
    error: str | None
    latency_ms: float
    response: str


class Detail(msgspec.Struct, frozen=True, kw_only=True):
    """One stored copy of an event (a replay makes another), its body and every attempt."""

    item: Item
    body: Any  # as delivered; for an undelivered event, as it would be sent now
    attempts: list[AttemptView]


def parse_time(text: str, now: float | None = None) -> float:
    """RFC 3339 (`2026-12-03T10:00:00Z`) or a span back from now (`90s`, `15m`, `1h`, `2d`)."""
    now = time.time() if now is None else now
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        return qbtime.parse(text).timestamp()
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (RFC 3339 like 2026-12-03T10:00:00Z, or 30m, 1h, 2d back)"
        ) from None


def _object_key(instance: str | None, obj: str) -> tuple[str, str]:
    """SQL and its argument matching `invoices/123` (of one instance, or of any)."""
    kind, sep, object_id = obj.partition("/")
    if not sep or not kind or not object_id:
        raise ValueError(f"--object takes TYPE/ID, like invoices/123 (got {obj!r})")
    if instance:
        return "object_key = ?", f"{instance}\x1f{kind}\x1f{object_id}"
    return "substr(object_key, instr(object_key, char(31))) = ?", f"\x1f{kind}\x1f{object_id}"


def _where(flt: Filter, time_column: str) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if flt.instance:
        clauses.append("instance = ?")
        args.append(flt.instance)
    if flt.object:
        clause, arg = _object_key(flt.instance, flt.object)
        clauses.append(clause)
        args.append(arg)
    if flt.since is not None:
        clauses.append(f"{time_column} >= ?")
        args.append(flt.since)
    if flt.until is not None:
        clauses.append(f"{time_column} < ?")
        args.append(flt.until)
    return clauses, args


_UNDELIVERED: Final = {
    "pending": "state = 'pending' AND attempts = 0",
    "retrying": "state = 'pending' AND attempts > 0",
    "dead": "state = 'dead'",
}


def _describe(blob: bytes) -> tuple[str, str, str]:
    try:
        event = _decode_event(blob)
    except msgspec.DecodeError:
        return "?", "?", "the stored event cannot be decoded"
    if event.change is not None:
        return event.object_type, event.change.object_id, event.change.event_type.value
    if event.resync is not None:
        return event.object_type, event.resync.resync_id, f"RESYNC {event.resync.status.value}"
    status = event.connection.status.value if event.connection else "?"
    return event.object_type, event.instance, f"CONNECTION {status}"


def _undelivered(
    conn: sqlite3.Connection, flt: Filter, states: Sequence[str], event_id: str | None = None
) -> list[Item]:
    clauses, args = _where(flt, "accepted_at")
    clauses.append("(" + " OR ".join(_UNDELIVERED[s] for s in states) + ")")
    if event_id is not None:
        clauses.append("event_id = ?")
        args.append(event_id)
    rows = conn.execute(
        "SELECT seq, event_id, instance, state, attempts, next_at, accepted_at, last_error, body"
        f" FROM outbox WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?",
        [*args, flt.limit],
    ).fetchall()
    items = []
    for seq, event_id, inst, state, attempts, next_at, accepted_at, error, blob in rows:
        object_type, object_id, event_type = _describe(blob)
        if state == "pending" and attempts:
            state = "retrying"
        items.append(
            Item(
                seq=seq,
                event_id=event_id,
                instance=inst,
                object_type=object_type,
                object_id=object_id,
                event_type=event_type,
                state=state,
                attempts=attempts,
                accepted_at=accepted_at,
                next_at=next_at if state != "dead" else None,
                last_error=error,
            )
        )
    return items


def _delivered(conn: sqlite3.Connection, flt: Filter, event_id: str | None = None) -> list[Item]:
    clauses, args = _where(flt, "delivered_at")
    if event_id is not None:
        clauses.append("event_id = ?")
        args.append(event_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        "SELECT seq, event_id, instance, accepted_at, delivered_at, event,"
        " (SELECT COUNT(*) FROM attempts WHERE attempts.seq = history.seq)"
        f" FROM history {where} ORDER BY seq LIMIT ?",
        [*args, flt.limit],
    ).fetchall()
    items = []
    for seq, event_id, inst, accepted_at, delivered_at, blob, attempts in rows:
        object_type, object_id, event_type = _describe(blob)
        items.append(
            Item(
                seq=seq,
                event_id=event_id,
                instance=inst,
                object_type=object_type,
                object_id=object_id,
                event_type=event_type,
                state="delivered",
                attempts=attempts,
                accepted_at=accepted_at,
                delivered_at=delivered_at,
            )
        )
    return items


def list_deliveries(outbox: Outbox, flt: Filter) -> list[Item]:
    """At most `flt.limit` events, oldest first (by seq: the order they were accepted in)."""

    def op(conn: sqlite3.Connection) -> list[Item]:
        found: list[Item] = []
        undelivered = [s for s in _UNDELIVERED if flt.state in (s, "all")]
        if undelivered:
            found += _undelivered(conn, flt, undelivered)
        if flt.state in ("delivered", "all"):
            found += _delivered(conn, flt)
        found.sort(key=lambda item: item.seq)
        return found[: flt.limit]

    return outbox.query(op)


def _attempts(conn: sqlite3.Connection, seq: int) -> list[AttemptView]:
    return [
        AttemptView(
            at=at,
            endpoint=endpoint,
            status=status,
            error=error,
            latency_ms=latency,
            response=(response or b"").decode("utf-8", "replace"),
        )
        for at, endpoint, status, error, latency, response in conn.execute(
            "SELECT at, endpoint, status, error, latency_ms, response FROM attempts"
            " WHERE seq = ? ORDER BY id",
            (seq,),
        )
    ]


def _json_or_text(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def show(outbox: Outbox, config: Config, event_id: str) -> list[Detail]:
    """Every stored copy of `event_id` (a replay makes another), oldest first; empty when none
    is kept. A delivered copy shows the body as it was sent; an undelivered one as it would be
    sent now, with the instance's current settings."""
    everything = Filter(state="all", limit=1000)

    def op(conn: sqlite3.Connection) -> list[Detail]:
        details: list[Detail] = []
        for item in _delivered(conn, everything, event_id):
            (sent,) = conn.execute("SELECT body FROM history WHERE seq = ?", (item.seq,)).fetchone()
            body = _json_or_text(sent) if sent is not None else None
            details.append(Detail(item=item, body=body, attempts=_attempts(conn, item.seq)))
        for item in _undelivered(conn, everything, list(_UNDELIVERED), event_id):
            (blob,) = conn.execute("SELECT body FROM outbox WHERE seq = ?", (item.seq,)).fetchone()
            details.append(
                Detail(item=item, body=_render(config, blob), attempts=_attempts(conn, item.seq))
            )
        details.sort(key=lambda detail: detail.item.seq)
        return details

    return outbox.query(op)


def _render(config: Config, blob: bytes) -> Any:
    try:
        event = _decode_event(blob)
    except msgspec.DecodeError:
        return None
    inst = config.instance(event.instance)
    tags = inst.tags if inst is not None else []
    body, _ = payload.render(
        event, instance_name=event.instance, tags=tags, fmt=config.delivery.format
    )
    return _json_or_text(body)


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    since: float | None = None
    until: float | None = None
    event_ids: tuple[str, ...] = ()
    object: str | None = None


def _replay_rows(replay: Replay) -> tuple[str, list[Any]]:
    """The WHERE of the history rows a replay sends again."""
    if not replay.event_ids and replay.since is None:
        raise ValueError("a replay needs --since (with --until if wanted) or --event ids")
    flt = Filter(
        state="delivered",
        instance=replay.instance,
        since=replay.since,
        until=replay.until,
        object=replay.object,
    )
    clauses, args = _where(flt, "delivered_at")
    if replay.event_ids:
        clauses.append(f"event_id IN ({', '.join('?' * len(replay.event_ids))})")
        args += replay.event_ids
    return " AND ".join(clauses), args


async def replay(outbox: Outbox, request: Replay, *, dry_run: bool = False) -> int:
    """Queue the matching delivered events again (or, dry, count them); returns how many."""
    where, args = _replay_rows(request)
    if dry_run:
        return outbox.query(
            lambda conn: int(
                conn.execute(f"SELECT COUNT(*) FROM history WHERE {where}", args).fetchone()[0]
            )
        )
    now = time.time()

    def op(conn: sqlite3.Connection) -> int:
        # Inserted in seq order, so that each object's events keep their order.
        return conn.execute(
            "INSERT INTO outbox (event_id, instance, object_key, body, state, attempts,"
            " next_at, accepted_at)"
            " SELECT event_id, instance, object_key, event, 'pending', 0, ?, ?"
            f" FROM history WHERE {where} ORDER BY seq",
            [now, now, *args],
        ).rowcount

    return await outbox.execute(op, on_commit=outbox.requeued)
