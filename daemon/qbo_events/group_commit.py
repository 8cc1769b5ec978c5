"""Group commit over SQLite: write operations batched into one transaction, reads on their own.

Callers hand writes over as operations (functions of a connection) and await their futures.
Operations run on the event loop's thread; those handed over within one loop turn, or while a
commit runs on the helper thread, form one batch. Reads use a second connection: they see
committed rows and never wait for a commit; reads that scan large tables run on a reader thread
(`read_off_loop`), so that the loop keeps serving while they do.

The COMMIT (with durability "full", an fsync) runs on the loop too while storage is quick: a
commit blocks it for well under a millisecond, where handing it to a thread cost three times
that in the thread's wake-up on a busy machine. When the moving average of commit times passes
`SLOW_COMMIT`, commits move to the helper thread so that the loop keeps serving, and come back
once they have been quick for a while (`QUICK_FOR`): one slow fsync on an idle machine moves
nothing.

Every failure of the storage reaches callers as `OutboxError`. A failed commit, or an operation
failing on the storage itself (a full disk, an I/O error, a read-only file), makes the database
unwritable: one line is logged, and a probe tries a small write every `PROBE_EVERY` seconds until
one commits, so that recovery is found even when nothing else writes.

With durability "full", only a batch holding a durable operation is fsynced. Bookkeeping that a
power cut may take (a delivered row's removal, a retry's new time: at worst an event is sent
again) commits without one; the next fsync covers it too, since the WAL is written in order, and
the WAL is fsynced within `SYNC_WITHIN` seconds in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import struct
import time
import urllib.parse
from collections import deque
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
# Commits move by the median of the last SLOW_SAMPLES commit times, not by their average: a single
# fsync that a busy disk holds up for 50 ms lifts an average past SLOW_COMMIT for several commits,
# which on an idle machine flipped the placement back and forth about twenty times in 14 minutes.
SLOW_SAMPLES = 9
QUICK_FOR = 60.0  # seconds the median must stay below half of SLOW_COMMIT before commits return
SYNC_WITHIN = 1.0  # seconds an unsynced commit may wait for an fsync of the WAL
PROBE_EVERY = 1.0  # seconds between write probes while the database cannot be written
# Below this much free space a probe is not even tried: a small write can succeed in space the
# WAL already holds while the next real batch still fails, and the state would flap.
PROBE_FREE_BYTES = 256 * 1024
_WEIGHT = 0.2  # of the newest commit in the moving average
# SQLite's primary result codes that mean the storage itself failed, not the operation:
# PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_STORAGE_CODES = frozenset({3, 8, 10, 11, 13, 14, 26})
_FULL = 13


class _Placement:
    """Where commits run: on the loop while they are quick, on the helper thread while slow."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.quick = slow / 2
        self.average = 0.0  # reported as the commit time
        self.threaded = False
        self._recent: deque[float] = deque(maxlen=SLOW_SAMPLES)
        self._quick_since: float | None = None

    def on_thread(self, now: float) -> bool:
        return self.threaded

    def record(self, took: float, now: float, *, inline: bool) -> None:
        self.average += _WEIGHT * (took - self.average)
        self._recent.append(took)
        if len(self._recent) < SLOW_SAMPLES:
            return
        median = sorted(self._recent)[SLOW_SAMPLES // 2]
        if not self.threaded:
            if median > self.slow:
                self.threaded = True
                self._quick_since = None
                log.warning(
                    "outbox commits are slow; committing on a helper thread",
                    median_ms=round(1000 * median, 3),
                )
        elif median >= self.quick:
            self._quick_since = None
        elif self._quick_since is None:
            self._quick_since = now
        elif now - self._quick_since >= QUICK_FOR:
            self.threaded = False
            log.info("outbox commits are quick again; committing on the event loop")


class GroupCommit:
    def __init__(
        self,
        path: Path,
        durability: str,
        *,
        on_open: str = "",
        slow_commit: float = SLOW_COMMIT,
        create: bool = True,
    ) -> None:
        self.path = path
        self.durability = durability
        self._schema = on_open
        self._create = create
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._committer: ThreadPoolExecutor | None = None
        # Off-loop reads: whole-table scans (counts, the rescan) in one lane, the senders'
        # fetches in another, so that a /status at a million rows never holds up a delivery.
        self._scans = _ReaderThread("outbox-scan")
        self._fetches = _ReaderThread("outbox-fetch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[Pending] = []
        self._committing = False
        self._scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.commits = 0
        self.batches = 0  # batches that reached their end, committed or not
        self.writable = False
        self.fault: str | None = None  # why the database cannot be written, while it cannot
        self._unwritable_since = 0.0
        self._probe_timer: asyncio.TimerHandle | None = None
        self._batch_faulted = False
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
        """Raises OutboxError naming the file when it is missing (with `create` false), is not
        a database, is truncated, or cannot be opened; such a file is left as it is."""
        self._loop = asyncio.get_running_loop()
        if not self._create and not self.path.is_file():
            raise OutboxError(f"no outbox at {self.path} (has the daemon run with this state_dir?)")
        try:
            _check_header(self.path)
            self._conn = _connect(self.path, self.durability, self._schema, create=self._create)
            self._reader = _connect_reader(self.path)
            self._scans.open(self.path)
            self._fetches.open(self.path)
        except (sqlite3.Error, OSError) as exc:
            for conn in (self._conn, self._reader):
                if conn is not None:
                    conn.close()
            self._scans.close()
            self._fetches.close()
            self._conn = self._reader = None
            raise OutboxError(f"cannot open the outbox {self.path}: {_reason(exc)}") from exc
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
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if self._unsynced:
            self._sync_wal()
        self._committer.shutdown(wait=True)
        self._scans.close()
        self._fetches.close()
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
        """A quick read on the loop's thread (an index lookup, a few rows)."""
        if self._reader is None:
            raise OutboxClosed("the outbox is closed")
        try:
            return op(self._reader)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"outbox read failed: {_reason(exc)}") from exc

    async def read_off_loop(self, op: Callable[[sqlite3.Connection], T], *, scan: bool = True) -> T:
        """A read that may take long, on a reader thread: SQLite lets go of the GIL while it
        steps, so the loop keeps turning. `scan` reads (whole-table counts) and the others
        have a thread each."""
        lane = self._scans if scan else self._fetches
        if self._loop is None:
            raise OutboxClosed("the outbox is closed")
        try:
            return await lane.run(self._loop, op)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"outbox read failed: {_reason(exc)}") from exc

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
        return self._placement.threaded

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
            outcomes, storage_error = _execute(self._conn, batch)
        except Exception as exc:  # whatever it is, the batch's callers must hear of it
            self.batches += 1
            if _is_storage_fault(exc):
                self._unwritable(exc)
            unavailable = OutboxError(f"outbox unavailable: {_reason(exc)}")
            unavailable.__cause__ = exc
            _settle(batch, [(False, unavailable)] * len(batch))
            self._next()
            return
        # A batch whose own operations hit a storage fault proves nothing by committing the rest.
        self._batch_faulted = storage_error is not None
        if storage_error is not None:
            self._unwritable(storage_error)
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
        self.batches += 1
        # /readyz reports a database that cannot commit (a full disk, say) until one succeeds.
        if error is not None:
            self._unwritable(error)
        elif not self.writable and not self._batch_faulted:
            self._writable_again()
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
            failure = OutboxError(f"outbox commit failed: {_reason(error)}")
            failure.__cause__ = error
            outcomes = [(False, failure)] * len(batch)
        try:
            _settle(batch, outcomes)
        finally:
            self._next()

    def _unwritable(self, error: BaseException) -> None:
        """The storage failed: say so once, and probe until a write commits again."""
        self.fault = _reason(error)
        if not self.writable:
            return
        self.writable = False
        self._unwritable_since = time.monotonic()
        log.error(
            "outbox cannot write; intake refused until it can",
            error=self.fault,
            path=str(self.path),
        )
        self._schedule_probe()

    def _writable_again(self) -> None:
        self.writable = True
        self.fault = None
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        log.info(
            "outbox writable again",
            after_s=round(time.monotonic() - self._unwritable_since, 3),
            path=str(self.path),
        )

    def _schedule_probe(self) -> None:
        if self._probe_timer is None and self._loop is not None and self._conn is not None:
            self._probe_timer = self._loop.call_later(PROBE_EVERY, self._probe)

    def _probe(self) -> None:
        """A small durable write, once the file system has room again: its commit is what
        makes the database writable (in `_committed`)."""
        self._probe_timer = None
        if self.writable or self._conn is None or self._loop is None:
            return
        try:
            free = _free_bytes(self.path.parent)
        except OSError:
            free = 0
        if free < PROBE_FREE_BYTES:
            self._schedule_probe()
            return
        done: asyncio.Future[None] = self._loop.create_future()
        done.add_done_callback(self._probed)
        self.submit(_touch, done)

    def _probed(self, done: asyncio.Future[None]) -> None:
        failed = done.cancelled() or done.exception() is not None
        if failed and not self.writable:
            self._schedule_probe()

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


class _ReaderThread:
    """One thread with its own read-only connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    def open(self, path: Path) -> None:
        self._conn = _connect_reader(path)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)

    async def run(
        self, loop: asyncio.AbstractEventLoop, op: Callable[[sqlite3.Connection], T]
    ) -> T:
        if self._conn is None or self._thread is None:
            raise OutboxClosed("the outbox is closed")
        return await loop.run_in_executor(self._thread, op, self._conn)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
        self._conn = self._thread = None


def _execute(
    conn: sqlite3.Connection, batch: list[Pending]
) -> tuple[list[tuple[bool, Any]], Exception | None]:
    """Run the batch in one open transaction. An operation that raises is left out and the
    rest run again from a clean start, so that it cannot undo its batch-mates' work. Also
    returns the last failure that was the storage's own (a full disk, an I/O error), if any."""
    if conn.in_transaction:  # left open by a ROLLBACK that failed; every BEGIN would fail
        conn.execute("ROLLBACK")
    failed: dict[int, OutboxError] = {}
    storage_error: Exception | None = None
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
                if conn.in_transaction:  # SQLite rolls back on its own after some errors
                    conn.execute("ROLLBACK")
                failed[index] = _translated(exc)
                if _is_storage_fault(exc):
                    storage_error = exc
                break
        else:
            return outcomes, storage_error


def _translated(exc: Exception) -> OutboxError:
    """The one edge where storage exceptions become ours; the original stays as the cause."""
    if isinstance(exc, OutboxError):
        return exc
    error = OutboxError(f"outbox write failed: {_reason(exc)}")
    error.__cause__ = exc
    return error


def _is_storage_fault(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _STORAGE_CODES
    return isinstance(exc, OSError)


def _reason(exc: BaseException) -> str:
    """What an operator reads in the log and /readyz: a full disk is named as such."""
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if isinstance(exc, sqlite3.Error):
        full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == _FULL
    text = str(exc) or type(exc).__name__
    return f"disk full: {text}" if full and "full" not in text else text


def _touch(conn: sqlite3.Connection) -> None:
    """The probe's write: the header's user_version, rewritten with its own value."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(f"PRAGMA user_version = {version}")


def _free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


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


_MAGIC = b"SQLite format 3\x00"


def _check_header(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that is not an SQLite database or was cut
    short; reading the header costs nothing, where PRAGMA quick_check reads every page."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return  # created and never written: SQLite makes it a database
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise OutboxError(f"{path} is not an SQLite database; move it aside to start afresh")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages, changed, valid_for = struct.unpack(">I", header[28:32])[0], header[24:28], header[92:96]
    wal = _wal_path(path)
    recovering = wal.exists() and wal.stat().st_size > 0  # the WAL may hold the missing pages
    if size % page_size or (
        not recovering and changed == valid_for and pages and pages * page_size > size
    ):
        raise OutboxError(
            f"{path} is truncated ({size} bytes, expected {pages * page_size});"
            " restore it from a backup or move it aside to start afresh"
        )


def _connect(
    path: Path, durability: str, schema: str, *, create: bool = True
) -> sqlite3.Connection:
    if create:
        prepare_state_dir(path.parent)
        # Create the file 0600 before SQLite does; its -wal and -shm files copy these
        # permissions.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
    # mode=rw: a file that has gone is an error, not a new empty outbox.
    uri = f"file:{urllib.parse.quote(str(path))}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
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
