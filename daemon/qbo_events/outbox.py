"""The durable SQLite outbox: accepted events, retries, dead letters, quarantine, cursors, tokens.

This is the only module with the outbox's SQL, apart from the connections' own tables
(`connect/store.py`, run through `execute` and `query`); `group_commit` runs it, so that with
`durability = "full"` one fsync covers a batch of operations rather than each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import structlog

from qbo_events.connect.store import SCHEMA as CONNECTIONS_SCHEMA
from qbo_events.errors import OutboxClosed, OutboxError, OutboxFull
from qbo_events.events import Event
from qbo_events.group_commit import GroupCommit, Operation
from qbo_events.history import SCHEMA as HISTORY_SCHEMA
from qbo_events.history import Attempt, insert_attempts, keep_delivered
from qbo_events.history import prune as prune_history_batch
from qbo_events.quickbooks.oauth import Tokens
from qbo_events.resync_store import SCHEMA as RESYNC_SCHEMA

log = structlog.get_logger("qbo_events.outbox")
T = TypeVar("T")
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    object_key TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    accepted_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (instance, state, next_at);
CREATE INDEX IF NOT EXISTS outbox_object ON outbox (object_key, seq);
CREATE TABLE IF NOT EXISTS dedupe (
    event_id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_seen ON dedupe (seen_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    instance TEXT NOT NULL,
    resource TEXT NOT NULL,
    cursor TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (instance, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    instance TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_calls (
    month TEXT NOT NULL,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (month, instance, kind)
) WITHOUT ROWID;
"""

PENDING: Final = "pending"
DEAD: Final = "dead"
# Seconds a count of the rows serves /status: a monitor polling often, or many at once, then
# costs one full scan a second at most, never a queue of them.
COUNTS_FRESH: Final = 1.0


class Row(msgspec.Struct, frozen=True):
    """An outbox row handed to a sender."""

    seq: int
    attempts: int
    accepted_at: float
    event: Event


class Listing(msgspec.Struct, frozen=True):
    """A row as `deliveries list` shows it."""

    seq: int
    event_id: str
    instance: str
    object_type: str
    object_id: str
    event_type: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None


class Cursor(msgspec.Struct, frozen=True):
    """A poll loop's new position, committed in the same transaction as the events it found."""

    instance: str
    resource: str
    value: str


class Counts(msgspec.Struct, frozen=True):
    pending: int
    retrying: int
    dead: int
    quarantined: int


_UNDECODABLE: Final = "the stored event cannot be decoded"
_encode = msgspec.msgpack.Encoder().encode
_decode_event = msgspec.msgpack.Decoder(Event).decode


class Outbox:
    """`async with Outbox(path) as outbox:` opens the database; closing commits what is queued.

    With `create=False` (the read-only commands) a missing outbox is an error, never a new one
    in a new state directory, and the undelivered rows are not counted (`pending` starts at 0):
    those commands list and re-queue rows, and never take in events."""

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "full",
        max_pending: int = 1_000_000,
        dedupe_window: float = 7 * 86400.0,
        history_days: float = 0.0,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.path = path
        self.durability = durability
        self.max_pending = max_pending
        self.dedupe_window = dedupe_window
        # Delivered events and every attempt are kept this long (history.py); 0 keeps none.
        self._history_days = history_days
        self._prune_now = asyncio.Event()
        self._clock = clock
        self._db = GroupCommit(
            path,
            durability,
            on_open=_SCHEMA + CONNECTIONS_SCHEMA + HISTORY_SCHEMA + RESYNC_SCHEMA,
            create=create,
        )
        self._count_on_open = create
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self.pending = 0  # undelivered, not dead: what max_pending bounds
        self._pushing_back = False  # refusing intake over max_pending
        self.accepted = 0
        self.duplicates = 0
        self._last_prune = 0.0
        self._acks: list[tuple[int, Attempt | None, bytes | None]] = []
        self._acks_done: asyncio.Future[int] | None = None
        self._counting: asyncio.Future[Counts] | None = None  # the scan /status callers share
        self._counted: tuple[float, Counts] | None = None  # when that scan began, its counts

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Raises OutboxError naming the file when it cannot be opened or read."""
        self._loop = asyncio.get_running_loop()
        self._db.open()
        if not self._count_on_open:
            self._accepting = True
            return
        try:
            # A full scan at a million rows: a fraction of a second, off the loop.
            self.pending = await self._db.reads.scan(_count_pending)
        except OutboxError as exc:
            await self._db.close()
            raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc
        self._accepting = True

    def stop_intake(self) -> None:
        """From now on, accept() raises OutboxClosed; delivery bookkeeping still works."""
        self._accepting = False

    async def close(self) -> None:
        self._accepting = False
        await self._db.close()

    @property
    def writable(self) -> bool:
        return self._db.writable

    @property
    def fault(self) -> str | None:
        """Why the outbox cannot be written (a full disk, say), while it cannot."""
        return self._db.fault

    def log_refusal(
        self, logger: Any, message: str, *, level: str = "warning", **fields: Any
    ) -> None:
        """Log a refusal caused by the outbox at `level`, or at debug while the storage itself
        fails or intake pushes back: the outbox has then said so once, and a line per request,
        poll or delivery would bury that line."""
        quiet = self._pushing_back or not self.writable
        getattr(logger, "debug" if quiet else level)(message, **fields)

    def _check_room(self) -> None:
        """Raise OutboxFull over max_pending; say so once when intake starts pushing back and
        once when it ends, rather than once per refused webhook or poll."""
        if self.pending >= self.max_pending:
            if not self._pushing_back:
                self._pushing_back = True
                log.warning(
                    "the outbox holds max_pending undelivered events; intake pushes back"
                    " (webhooks get 503, polls wait) until deliveries drain it",
                    undelivered=self.pending,
                    max_pending=self.max_pending,
                )
            raise OutboxFull(f"{self.pending} undelivered events (max_pending {self.max_pending})")
        if self._pushing_back:
            self._pushing_back = False
            log.info("intake resumed: the outbox is below max_pending", undelivered=self.pending)

    def _refuse_while_unwritable(self) -> None:
        # New intake waits for the probe to find the storage writable again: a write that
        # happens to fit meanwhile would make the state, and its log lines, flap.
        if self._db.is_open and not self._db.writable:
            raise OutboxError(f"the outbox cannot write: {self._db.fault}")

    @property
    def commits(self) -> int:
        return self._db.commits

    @property
    def commit_seconds(self) -> float:
        return self._db.commit_seconds

    @property
    def slow_storage(self) -> bool:
        return self._db.threaded

    async def _run(
        self,
        op: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        *,
        durable: bool = True,
    ) -> T:
        return await self._db.run(op, on_commit, durable=durable)

    def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self._db.read(op)

    async def execute(
        self,
        op: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        """A durable write of a neighbour's tables (see connect/store.py), in the group commit."""
        self._refuse_while_unwritable()
        return await self._run(op, on_commit)

    def query(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """A quick read of a neighbour's tables, committed rows only."""
        return self._read(op)

    # -- intake --------------------------------------------------------------------------------

    async def accept(
        self,
        events: Sequence[Event],
        *,
        cursor: Cursor | None = None,
        dedupe: bool = True,
        also: Operation | None = None,
    ) -> int:
        """Store events (skipping ones seen within the dedupe window) and optionally a cursor,
        in one transaction. Returns how many were new. Raises OutboxFull or OutboxClosed.

        `dedupe=False` stores every event even if seen before (a resync delivers again what the
        operator asked for); `also` runs in the same transaction (a resync job's progress)."""
        if not self._accepting:
            raise OutboxClosed("the daemon is shutting down")
        self._refuse_while_unwritable()
        if events:
            self._check_room()
        now = self._clock()
        rows = [(e.event_id, e.instance, e.object_key, _encode(e)) for e in events]

        def op(conn: sqlite3.Connection) -> int:
            new = 0
            for event_id, instance, key, body in rows:
                seen = conn.execute(
                    f"INSERT OR {'IGNORE' if dedupe else 'REPLACE'} INTO dedupe"
                    " (event_id, seen_at) VALUES (?, ?)",
                    (event_id, now),
                )
                if seen.rowcount or not dedupe:
                    conn.execute(
                        "INSERT INTO outbox (event_id, instance, object_key, body, next_at,"
                        " accepted_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (event_id, instance, key, body, now, now),
                    )
                    new += 1
            if cursor is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO cursors (instance, resource, cursor, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    (cursor.instance, cursor.resource, cursor.value, now),
                )
            if also is not None:
                also(conn)
            return new

        def counted(new: int) -> None:
            self.pending += new
            self.accepted += new
            self.duplicates += len(rows) - new

        new = await self._run(op, counted)
        if now - self._last_prune > 3600:
            self._last_prune = now
            await self._run(_prune(now - self.dedupe_window))
        return new

    async def quarantine(self, body: bytes, reason: str) -> None:
        self._refuse_while_unwritable()
        now = self._clock()
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO quarantine (received_at, reason, body) VALUES (?, ?, ?)",
                (now, reason, body),
            )
        )

    # -- cursors and tokens --------------------------------------------------------------------

    async def get_cursor(self, instance: str, resource: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT cursor FROM cursors WHERE instance = ? AND resource = ?",
                (instance, resource),
            ).fetchone()
            return None if row is None else str(row[0])

        return self._read(op)

    async def load_tokens(self, instance: str) -> Tokens | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT body FROM tokens WHERE instance = ?", (instance,)).fetchone()
            return None if row is None else bytes(row[0])

        body = self._read(op)
        return None if body is None else msgspec.json.decode(body, type=Tokens)

    async def save_tokens(self, instance: str, tokens: Tokens) -> None:
        """Committed (with durability full, fsynced) before it returns: a rotated refresh token
        must never be used before it is safe on disk."""
        now = self._clock()
        body = msgspec.json.encode(tokens)
        await self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO tokens (instance, body, updated_at) VALUES (?, ?, ?)",
                (instance, body, now),
            )
        )

    # -- QuickBooks call metering --------------------------------------------------------------

    async def load_api_calls(self, month: str) -> dict[tuple[str, str], int]:
        """The stored calls of `month` (`2026-12`) per (instance, kind)."""

        def op(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                "SELECT instance, kind, count FROM api_calls WHERE month = ?", (month,)
            ).fetchall()
            return {(str(i), str(k)): int(c) for i, k, c in rows}

        return self._read(op)

    async def save_api_calls(
        self, rows: list[tuple[str, str, str, int]], *, prune_before: str, durable: bool
    ) -> None:
        """Store the counts (month, instance, kind, count) as they stand; drop months before
        `prune_before`."""

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO api_calls (month, instance, kind, count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (month, instance, kind) DO UPDATE SET"
                " count = max(count, excluded.count)",
                rows,
            )
            conn.execute("DELETE FROM api_calls WHERE month < ?", (prune_before,))

        await self._run(op, durable=durable)

    # -- delivery ------------------------------------------------------------------------------

    async def due(
        self, instance: str, limit: int, skip: Iterable[int] = ()
    ) -> tuple[list[Row], float | None]:
        """Up to `limit` rows of `instance` that may be sent now, oldest first, leaving out the
        rows in `skip` (in flight) and rows waiting behind an earlier row of the same object.
        Also returns when the next not-yet-due row of the instance falls due, if any."""
        now = self._clock()
        skipping = set(skip)

        def op(conn: sqlite3.Connection) -> tuple[list[Row], float | None, list[int]]:
            cur = conn.execute(
                "SELECT seq, attempts, accepted_at, body FROM outbox AS o"
                " WHERE instance = ? AND state = 'pending' AND next_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox AS p WHERE p.object_key = o.object_key"
                "   AND p.seq < o.seq AND p.state = 'pending')"
                " ORDER BY next_at, seq LIMIT ?",
                (instance, now, limit + len(skipping)),
            )
            rows: list[Row] = []
            broken: list[int] = []
            for seq, attempts, accepted_at, body in cur:
                if seq in skipping or len(rows) == limit:
                    continue
                try:
                    rows.append(Row(seq, attempts, accepted_at, _decode_event(body)))
                except msgspec.DecodeError:
                    broken.append(seq)
            later = conn.execute(
                "SELECT MIN(next_at) FROM outbox WHERE instance = ? AND state = 'pending'"
                " AND next_at > ?",
                (instance, now),
            ).fetchone()[0]
            return rows, later, broken

        # Usually an index lookup and a few rows, read on the loop: a thread's round trip costs
        # more. Rows due by their time but waiting behind an earlier row of their object (whose
        # retry is later) are all read past, a million of them at worst: such a read moves to
        # a thread.
        rows, later, broken = await self._db.reads.read_briefly(op)
        for seq in broken:
            # Kept for a person to look at, out of the senders' way.
            await self.dead_letter(seq, 0, _UNDECODABLE)
        return rows, later

    async def instances_with_work(self) -> dict[str, float]:
        """Each instance that has undelivered rows, with its earliest next attempt. Also
        re-counts the undelivered rows, which another process (`deliveries retry`) may change."""

        def op(conn: sqlite3.Connection) -> tuple[dict[str, float], int]:
            rows = conn.execute(
                "SELECT instance, MIN(next_at), COUNT(*) FROM outbox WHERE state = 'pending'"
                " GROUP BY instance"
            ).fetchall()
            return {name: at for name, at, _ in rows}, sum(count for _, _, count in rows)

        # The GROUP BY reads every undelivered row: off the loop, in a snapshot fixed when the
        # count kept beside the database matched it. What this daemon committed since is the
        # difference between that count and the count now; the rest is what others changed.
        counted, (work, scanned) = await self._db.reads.read_pinned(lambda: self.pending, op)
        self.pending = scanned + (self.pending - counted)
        return work

    async def delivered(
        self, seq: int, attempt: Attempt | None = None, body: bytes | None = None
    ) -> None:
        """Remove a delivered row (into history, with its attempt and the body as sent, while
        history_days is set). The rows delivered within one turn of the event loop go in one
        operation: at thousands of deliveries a second, one each would crowd the writer."""
        if not self._db.is_open or self._loop is None:
            raise OutboxClosed("the outbox is closed")
        self._acks.append((seq, attempt, body))
        if self._acks_done is None:
            self._acks_done = self._loop.create_future()
            self._loop.call_soon(self._flush_acks)
        await asyncio.shield(self._acks_done)

    def _flush_acks(self) -> None:
        seqs, self._acks = self._acks, []
        future, self._acks_done = self._acks_done, None
        assert future is not None

        keep = self.history_days > 0
        at = self._clock()

        def op(conn: sqlite3.Connection) -> int:
            if keep:
                insert_attempts(conn, [(seq, a) for seq, a, _ in seqs if a is not None])
                keep_delivered(conn, [(seq, body) for seq, _, body in seqs], at)
            rows = [(seq,) for seq, _, _ in seqs]
            return conn.executemany("DELETE FROM outbox WHERE seq = ?", rows).rowcount

        # Not fsynced on its own: lost to a power cut, the rows are only delivered again.
        self._db.submit(op, future, self._acked, durable=False)

    def _acked(self, count: int) -> None:
        self.pending -= count

    async def retry_later(
        self, seq: int, attempts: int, next_at: float, error: str, attempt: Attempt | None = None
    ) -> None:
        keep = attempt is not None and self.history_days > 0

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE seq = ?",
                (attempts, next_at, error[:500], seq),
            )
            if keep and attempt is not None:
                insert_attempts(conn, [(seq, attempt)])

        # Lost to a power cut, the event is only tried sooner.
        await self._run(op, durable=False)

    async def dead_letter(
        self, seq: int, attempts: int, error: str, attempt: Attempt | None = None
    ) -> None:
        keep = attempt is not None and self.history_days > 0

        def op(conn: sqlite3.Connection) -> int:
            if keep and attempt is not None:
                insert_attempts(conn, [(seq, attempt)])
            return conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = ?, last_error = ?"
                " WHERE seq = ? AND state = 'pending'",
                (attempts, error[:500], seq),
            ).rowcount

        await self._run(op, self._acked)

    @property
    def history_days(self) -> float:
        return self._history_days

    @history_days.setter
    def history_days(self, days: float) -> None:
        if days < self._history_days:
            self._prune_now.set()  # a shorter history applies at once, not at the next round
        self._history_days = days

    async def prune_history(self) -> int:
        """Delete history past history_days in small transactions; returns the rows deleted.
        With history_days at 0 everything kept so far goes, batch by batch, the same way."""
        before = self._clock() - self.history_days * 86400
        total = 0
        while True:
            gone = await self._run(lambda conn: prune_history_batch(conn, before), durable=False)
            total += gone
            if not gone:
                return total

    async def run_pruning(self, stop: asyncio.Event, interval: float = 60.0) -> None:
        """Prune history every `interval` seconds until `stop`; storage trouble waits a turn."""
        while not stop.is_set():
            self._prune_now.clear()
            with contextlib.suppress(OutboxError):
                await self.prune_history()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await _either(stop, self._prune_now)

    # -- inspection and repair -----------------------------------------------------------------

    async def counts(self) -> Counts:
        """The rows by state, at most COUNTS_FRESH seconds old. Callers meanwhile share one
        scan, which goes on to its end even if they all stop waiting."""
        if self._counted is not None and time.monotonic() - self._counted[0] < COUNTS_FRESH:
            return self._counted[1]
        if self._counting is None:
            began = time.monotonic()
            self._counting = self._db.reads.scan(_counts)  # a full scan: every /status asks
            self._counting.add_done_callback(lambda done: self._count_done(began, done))
        return await asyncio.shield(self._counting)

    def _count_done(self, began: float, done: asyncio.Future[Counts]) -> None:
        self._counting = None
        if not done.cancelled() and done.exception() is None:
            self._counted = (began, done.result())

    async def listing(self, *, dead: bool, instance: str | None, limit: int) -> list[Listing]:
        def op(conn: sqlite3.Connection) -> list[Listing]:
            sql = "SELECT seq, event_id, instance, state, attempts, next_at, last_error, body"
            sql += " FROM outbox WHERE state = ?"
            args: list[Any] = [DEAD if dead else PENDING]
            if instance:
                sql += " AND instance = ?"
                args.append(instance)
            sql += " ORDER BY seq LIMIT ?"
            args.append(limit)
            result = []
            for seq, event_id, inst, state, attempts, next_at, error, body in conn.execute(
                sql, args
            ):
                try:
                    event = _decode_event(body)
                    change, connection = event.change, event.connection
                    if change is not None:
                        what = (event.object_type, change.object_id, change.event_type.value)
                    elif event.resync is not None:
                        what = (event.object_type, event.resync.resync_id, "RESYNC")
                    else:
                        status = connection.status.value if connection else "?"
                        what = (event.object_type, inst, status)
                except msgspec.DecodeError:
                    # Listed all the same: a person looking for trouble must see this row.
                    what, error = ("?", "?", "?"), _UNDECODABLE
                result.append(
                    Listing(
                        seq=seq,
                        event_id=event_id,
                        instance=inst,
                        object_type=what[0],
                        object_id=what[1],
                        event_type=what[2],
                        state=state,
                        attempts=attempts,
                        next_at=next_at,
                        last_error=error,
                    )
                )
            return result

        return self._read(op)

    async def requeue_dead(self, *, instance: str | None, event_id: str | None) -> int:
        now = self._clock()

        def op(conn: sqlite3.Connection) -> int:
            sql = "UPDATE outbox SET state = 'pending', attempts = 0, next_at = ?"
            sql += " WHERE state = 'dead'"
            args: list[Any] = [now]
            if instance:
                sql += " AND instance = ?"
                args.append(instance)
            if event_id:
                sql += " AND event_id = ?"
                args.append(event_id)
            return conn.execute(sql, args).rowcount

        return await self._run(op, self.requeued)

    def requeued(self, count: int) -> None:
        """Rows made undelivered again (re-queued dead letters, replays) count as pending."""
        self.pending += count

    def stats(self) -> dict[str, Any]:
        return {
            "undelivered": self.pending,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "commits": self.commits,
            "writable": self.writable,
            "slow_storage": self.slow_storage,
            "commit_ms": round(1000 * self.commit_seconds, 3),
        }

    def __repr__(self) -> str:
        return f"<Outbox {self.path} pending={self.pending} commits={self.commits}>"


def _counts(conn: sqlite3.Connection) -> Counts:
    pending, retrying, dead = conn.execute(
        "SELECT"
        " COALESCE(SUM(state = 'pending' AND attempts = 0), 0),"
        " COALESCE(SUM(state = 'pending' AND attempts > 0), 0),"
        " COALESCE(SUM(state = 'dead'), 0) FROM outbox"
    ).fetchone()
    quarantined = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    return Counts(pending, retrying, dead, quarantined)


def _count_pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])


def _prune(before: float) -> Operation:
    return lambda conn: conn.execute("DELETE FROM dedupe WHERE seen_at < ?", (before,))


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Until either event is set."""
    async with asyncio.TaskGroup() as group:
        waits = [group.create_task(e.wait()) for e in (first, second)]
        done = asyncio.Event()
        for wait in waits:
            wait.add_done_callback(lambda _: done.set())
        await done.wait()
        for wait in waits:
            wait.cancel()
