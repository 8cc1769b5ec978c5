"""Group commit over SQLite: write operations batched into one transaction, reads on their own.

Callers hand writes over as operations (functions of a connection) and await their futures.
Operations run on the event loop's thread as soon as no commit is under way, and whatever
arrives during a commit forms the next batch. Reads use a second connection: they see committed
rows and never wait for a commit.

With durability "full", only a batch holding a durable operation is fsynced. Bookkeeping that
may be lost to a power cut (a delivered row's removal, a retry's new time: at worst the event
is sent again) commits without one; the next fsync covers it too, since the WAL is written in
order.

The COMMIT (with durability "full", an fsync) also runs on the loop while storage answers
quickly: a fraction of a millisecond blocked costs less than handing it to a thread, whose
wake-up on a busy machine took about three times as long as the commit itself. When commits
slow down (their moving average passes `SLOW_COMMIT`), they move to a helper thread so that the
loop keeps serving, and come back after `THREADED_FOR` seconds to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from qbo_events.errors import OutboxClosed, OutboxError

log = structlog.get_logger("qbo_events.outbox")
T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
# An operation, the future its caller awaits, what to do once it is committed (run even if the
# caller stopped waiting, so that counters kept beside the database stay true), and whether it
# must survive a power cut.
Pending = tuple[Operation, "asyncio.Future[Any]", "Callable[[Any], None] | None", bool]

# Seconds, moving average, above which commits leave the loop. Under a heavy webhook load on a
# two-core machine with an SSD they average 2-3 ms (checkpoints included), and committing on the
# loop still takes in a quarter more webhooks a second than the helper thread does.
SLOW_COMMIT = 0.005
THREADED_FOR = 10.0  # seconds on the helper thread before trying the loop again
_WEIGHT = 0.2  # of the newest commit in the moving average


class GroupCommit:
    def __init__(
        self, path: Path, durability: str, *, on_open: str = "", slow_commit: float = SLOW_COMMIT
    ) -> None:
        self.path = path
        self.durability = durability
        self._schema = on_open
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[Pending] = []
        self._committing = False
        self._scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.commits = 0
        self.writable = False
        self.slow_commit = slow_commit
        self.commit_seconds = 0.0  # moving average of inline commits
        self._threaded_until = 0.0  # monotonic; commits use the helper thread until then
        self._synchronous = ""  # the connection's PRAGMA synchronous, as last set
        self.unsynced_commits = 0

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def quiet(self) -> bool:
        """Nothing queued or committing: what a read sees is all that counters kept beside
        the database have been told of (a commit under way is visible to readers before its
        `on_commit` has run)."""
        return not self._committing and not self._queue

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._conn = _connect(self.path, self.durability, self._schema)
        self._reader = _connect_reader(self.path)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="outbox-commit")
        self.writable = True

    async def close(self) -> None:
        """After every operation handed over so far is committed."""
        if self._conn is None:
            return
        await self._idle.wait()
        assert self._committer is not None and self._reader is not None
        self._committer.shutdown(wait=True)
        self._conn.close()
        self._reader.close()
        self._conn = self._reader = self._committer = None
        self.writable = False

    async def run(
        self,
        op: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        *,
        durable: bool = True,
    ) -> T:
        if self._loop is None:
            raise OutboxClosed("the outbox is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self.submit(op, future, on_commit, durable=durable)
        # A caller that stops waiting does not stop the operation: it commits all the same.
        return await future

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise OutboxClosed("the outbox is closed")
        try:
            return op(self._reader)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None

    def submit(
        self,
        op: Operation,
        future: asyncio.Future[Any],
        on_commit: Callable[[Any], None] | None = None,
        *,
        durable: bool = True,
    ) -> None:
        """Queue `op`; `future` gets its result once its transaction is committed (and, if
        `durable`, fsynced under durability "full")."""
        if self._conn is None or self._loop is None:
            future.set_exception(OutboxClosed("the outbox is closed"))
            return
        self._queue.append((op, future, on_commit, durable))
        self._idle.clear()
        if not self._committing and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._begin)

    def _begin(self) -> None:
        self._scheduled = False
        if self._committing:
            return
        batch, self._queue = self._queue, []
        if not batch or self._conn is None or self._loop is None:
            self._idle.set()
            return
        try:
            self._set_synchronous(batch)
            outcomes = _execute(self._conn, batch)
        except sqlite3.Error as exc:
            _settle(batch, [(False, OutboxError(f"outbox unavailable: {exc}"))] * len(batch))
            self._loop.call_soon(self._begin)
            return
        self._committing = True
        began = time.monotonic()
        if began < self._threaded_until:
            commit = self._loop.run_in_executor(self._committer, _commit, self._conn)
            commit.add_done_callback(
                lambda done: self._committed(done.exception(), batch, outcomes)
            )
            return
        error: BaseException | None = None
        try:
            _commit(self._conn)
        except sqlite3.Error as exc:
            error = exc
        took = time.monotonic() - began
        self.commit_seconds += _WEIGHT * (took - self.commit_seconds)
        if self.commit_seconds > self.slow_commit:
            log.warning(
                "outbox commits are slow; committing on a helper thread for a while",
                average_ms=round(1000 * self.commit_seconds, 3),
                seconds=THREADED_FOR,
            )
            self._threaded_until = began + took + THREADED_FOR
            self.commit_seconds = 0.0
        self._committed(error, batch, outcomes)

    def _set_synchronous(self, batch: list[Pending]) -> None:
        assert self._conn is not None
        full = self.durability == "full" and any(durable for *_, durable in batch)
        wanted = "FULL" if full else "NORMAL"
        if wanted != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous = {wanted}")
            self._synchronous = wanted
        if not full and self.durability == "full":
            self.unsynced_commits += 1

    @property
    def threaded(self) -> bool:
        """Whether commits currently run on the helper thread (storage was slow)."""
        return time.monotonic() < self._threaded_until

    def _committed(
        self, error: BaseException | None, batch: list[Pending], outcomes: list[tuple[bool, Any]]
    ) -> None:
        self._committing = False
        # /readyz reports a database that cannot commit (a full disk, say) until one succeeds.
        self.writable = error is None
        if error is None:
            self.commits += 1
        else:
            outcomes = [(False, OutboxError(f"outbox commit failed: {error}"))] * len(batch)
        try:
            _settle(batch, outcomes)
        finally:
            self._begin()


def _execute(conn: sqlite3.Connection, batch: list[Pending]) -> list[tuple[bool, Any]]:
    """Run the batch in one open transaction. An operation that raises is left out and the
    rest run again from a clean start, so that it cannot undo its batch-mates' work."""
    failed: dict[int, Exception] = {}
    while True:
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        for index, (op, *_) in enumerate(batch):
            if index in failed:
                outcomes.append((False, failed[index]))
                continue
            try:
                outcomes.append((True, op(conn)))
            except Exception as exc:
                conn.execute("ROLLBACK")
                failed[index] = exc
                break
        else:
            return outcomes


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _settle(batch: list[Pending], outcomes: list[tuple[bool, Any]]) -> None:
    for (_, future, on_commit, _), (ok, value) in zip(batch, outcomes, strict=True):
        if ok and on_commit is not None:
            with contextlib.suppress(Exception):  # bookkeeping must not strand the futures
                on_commit(value)
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def prepare_state_dir(path: Path) -> None:
    """The state directory is 0700: it holds tokens and the events' raw bodies."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _connect(path: Path, durability: str, schema: str) -> sqlite3.Connection:
    prepare_state_dir(path.parent)
    # Create the file 0600 before SQLite does; its -wal and -shm files copy these permissions.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    # Writes run on the event loop: a command such as `deliveries retry` holding the lock may
    # make it wait this long, and no longer.
    conn.execute("PRAGMA busy_timeout = 1000")
    if schema:
        conn.executescript(schema)
    return conn


def _connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
