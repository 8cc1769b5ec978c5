"""Group commit over SQLite: write operations batched into one transaction, reads on their own.

Callers hand writes over as operations (functions of a connection) and await their futures.
Operations run on the event loop's thread; those handed over within one loop turn, or while a
commit runs on the helper thread, form one batch. Reads use a second connection: they see
committed rows and never wait for a commit.

The COMMIT (with durability "full", an fsync) runs on the loop too while storage is quick: a
commit blocks it for well under a millisecond, where handing it to a thread cost three times
that in the thread's wake-up on a busy machine. When the moving average of commit times passes
`SLOW_COMMIT`, commits move to the helper thread so that the loop keeps serving, and come back
once the average, still measured there, is below it again.

With durability "full", only a batch holding a durable operation is fsynced. Bookkeeping that a
power cut may take (a delivered row's removal, a retry's new time: at worst an event is sent
again) commits without one; the next fsync covers it too, since the WAL is written in order, and
the WAL is fsynced within `SYNC_WITHIN` seconds in any case.
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

# Seconds, moving average, above which commits leave the loop. A quick SSD commits in 0.2-0.4 ms;
# under a heavy webhook load on two cores, with checkpoints, the average reaches 2-3 ms, and
# committing on the loop still takes in a quarter more webhooks a second than the thread does.
SLOW_COMMIT = 0.005
THREADED_FOR = 10.0  # seconds on the helper thread before looking at the average again
SYNC_WITHIN = 1.0  # seconds an unsynced commit may wait for an fsync of the WAL
_WEIGHT = 0.2  # of the newest commit in the moving average


class _Placement:
    """Where commits run: on the loop while they are quick, on the helper thread while slow."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.average = 0.0
        self.threaded_until = 0.0  # monotonic

    def on_thread(self, now: float) -> bool:
        if now < self.threaded_until:
            return True
        if self.threaded_until:
            if self.average > self.slow:
                self.threaded_until = now + THREADED_FOR
                return True
            self.threaded_until = 0.0
            log.info("outbox commits are quick again; committing on the event loop")
        return False

    def record(self, took: float, now: float, *, inline: bool) -> None:
        self.average += _WEIGHT * (took - self.average)
        if inline and self.average > self.slow:
            log.warning(
                "outbox commits are slow; committing on a helper thread",
                average_ms=round(1000 * self.average, 3),
            )
            self.threaded_until = now + THREADED_FOR


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
        self._placement = _Placement(slow_commit)
        self._synchronous = ""  # the connection's PRAGMA synchronous, as last set
        self.unsynced_commits = 0  # committed without an fsync of their own
        self._unsynced = False  # since the last fsync of the WAL
        self._sync_timer: asyncio.TimerHandle | None = None

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
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._unsynced:
            self._sync_wal()
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

    @property
    def threaded(self) -> bool:
        """Whether commits currently run on the helper thread (storage was slow)."""
        return time.monotonic() < self._placement.threaded_until

    @property
    def awaiting_sync(self) -> bool:
        """Whether commits made without an fsync wait for the WAL's (within SYNC_WITHIN)."""
        return self._unsynced

    @property
    def commit_seconds(self) -> float:
        """The moving average of commit times."""
        return self._placement.average

    def _begin(self) -> None:
        self._scheduled = False
        if self._committing:
            return
        batch, self._queue = self._queue, []
        if not batch:
            self._idle.set()
            return
        if self._conn is None or self._loop is None:
            _settle(batch, [(False, OutboxClosed("the outbox is closed"))] * len(batch))
            self._idle.set()
            return
        fsync = self.durability == "full" and any(durable for *_, durable in batch)
        try:
            self._set_synchronous("FULL" if fsync else "NORMAL")
            outcomes = _execute(self._conn, batch)
        except sqlite3.Error as exc:
            _settle(batch, [(False, OutboxError(f"outbox unavailable: {exc}"))] * len(batch))
            self._next()
            return
        self._committing = True
        began = time.monotonic()
        if self._placement.on_thread(began):
            commit = self._loop.run_in_executor(self._committer, _timed_commit, self._conn)
            commit.add_done_callback(
                lambda done: self._committed(
                    done.exception(),
                    0.0 if done.exception() else done.result(),
                    batch,
                    outcomes,
                    fsync=fsync,
                    inline=False,
                )
            )
            return
        error: BaseException | None = None
        try:
            _commit(self._conn)
        except Exception as exc:  # whatever it is, the batch's callers must hear of it
            error = exc
        self._committed(error, time.monotonic() - began, batch, outcomes, fsync=fsync, inline=True)

    def _set_synchronous(self, wanted: str) -> None:
        assert self._conn is not None
        if wanted != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous = {wanted}")
            self._synchronous = wanted

    def _committed(
        self,
        error: BaseException | None,
        took: float,
        batch: list[Pending],
        outcomes: list[tuple[bool, Any]],
        *,
        fsync: bool,
        inline: bool,
    ) -> None:
        self._committing = False
        # /readyz reports a database that cannot commit (a full disk, say) until one succeeds.
        self.writable = error is None
        if error is None:
            self.commits += 1
            self._placement.record(took, time.monotonic(), inline=inline)
            if fsync:
                self._unsynced = False
            elif self.durability == "full":
                self.unsynced_commits += 1
                self._unsynced = True
                if self._sync_timer is None and self._loop is not None:
                    self._sync_timer = self._loop.call_later(SYNC_WITHIN, self._sync_wal)
        else:
            outcomes = [(False, OutboxError(f"outbox commit failed: {error}"))] * len(batch)
        try:
            _settle(batch, outcomes)
        finally:
            self._next()

    def _next(self) -> None:
        """The next batch from a later loop turn: an inline commit that started it directly
        would recurse, and callers' callbacks get to run first."""
        if not self._queue:
            self._idle.set()
        elif not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._begin)

    def _sync_wal(self) -> None:
        """Make the commits made without an fsync durable, unless one has done so since."""
        self._sync_timer = None
        if not self._unsynced or self._committer is None or self._loop is None:
            return
        self._unsynced = False
        done = self._loop.run_in_executor(self._committer, _fsync, _wal_path(self.path))
        done.add_done_callback(self._wal_synced)

    def _wal_synced(self, done: asyncio.Future[None]) -> None:
        error = done.exception()
        if error is not None:
            self._unsynced = True
            log.warning("outbox: fsync of the WAL failed", error=str(error))


def _execute(conn: sqlite3.Connection, batch: list[Pending]) -> list[tuple[bool, Any]]:
    """Run the batch in one open transaction. An operation that raises is left out and the
    rest run again from a clean start, so that it cannot undo its batch-mates' work."""
    if conn.in_transaction:  # left open by a ROLLBACK that failed; every BEGIN would fail
        conn.execute("ROLLBACK")
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


def _timed_commit(conn: sqlite3.Connection) -> float:
    began = time.monotonic()
    _commit(conn)
    return time.monotonic() - began


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: everything is in the database file, synced at its checkpoint
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
