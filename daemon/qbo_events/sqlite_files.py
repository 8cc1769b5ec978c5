"""The outbox's SQLite files: the state directory, the header check, the connections, the
WAL's fsync, reader threads, and which SQLite errors mean the storage itself failed (and how
they become ours)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import sqlite3
import struct
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from qbo_events.errors import OutboxClosed, OutboxError

T = TypeVar("T")
# SQLite's primary result codes that mean the storage itself failed, not the operation:
# PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_STORAGE_CODES = frozenset({3, 8, 10, 11, 13, 14, 26})
_FULL = 13


class ReaderThread:
    """One thread with its own read-only connection, both made on first use: a command that
    never reads off the loop starts no thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._path: Path | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._last: concurrent.futures.Future[Any] | None = None  # the last job handed over
        self._connecting = threading.Lock()

    def open(self, path: Path) -> None:
        self._path = path

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Run `op` on the thread; a storage failure comes back as OutboxError."""
        if self._path is None:
            raise OutboxClosed("the outbox is closed")
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        future = self._thread.submit(self._call, op)
        self._last = future
        return future

    async def run(
        self, loop: asyncio.AbstractEventLoop, op: Callable[[sqlite3.Connection], T]
    ) -> T:
        return await asyncio.wrap_future(self.submit(op), loop=loop)

    @property
    def idle(self) -> bool:
        """No job handed over is still queued or running (the thread's jobs run in order)."""
        return self._last is None or self._last.done()

    def when_idle(self, loop: asyncio.AbstractEventLoop, then: Callable[[], None]) -> None:
        if self._last is None or self._last.done():
            then()
        else:
            asyncio.wrap_future(self._last, loop=loop).add_done_callback(lambda _: then())

    def submit_pinned(self, op: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Fix a read snapshot now, on the calling thread (with the thread idle), then run
        `op` in it on the thread, which ends the transaction."""
        assert self.idle, "a pinned read needs the connection to itself"
        conn = self._connection()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        # WAL: the snapshot is taken by the first read, not by BEGIN.
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return self.submit(lambda c: _then_rollback(op, c))

    def _connection(self) -> sqlite3.Connection:
        with self._connecting:
            if self._conn is None:
                if self._path is None:
                    raise OutboxClosed("the outbox is closed")
                self._conn = connect_reader(self._path)
            return self._conn

    def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return op(self._connection())
        except (sqlite3.Error, OSError) as exc:
            raise storage_error("outbox read failed", exc) from exc

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        with self._connecting:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._thread = self._path = self._last = None


def _then_rollback(op: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    try:
        return op(conn)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def storage_error(what: str, exc: BaseException) -> OutboxError:
    """The one way a storage exception becomes ours: what failed and why, the original as the
    cause."""
    if isinstance(exc, OutboxError):
        return exc
    error = OutboxError(f"{what}: {describe(exc)}")
    error.__cause__ = exc
    return error


def is_storage_fault(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _STORAGE_CODES
    return isinstance(exc, OSError)


def describe(exc: BaseException) -> str:
    """What an operator reads in the log and /readyz: a full disk is named as such."""
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if isinstance(exc, sqlite3.Error):
        full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == _FULL
    text = str(exc) or type(exc).__name__
    return f"disk full: {text}" if full and "full" not in text else text


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: everything is in the database file, synced at its checkpoint
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_state_dir(path: Path) -> None:
    """The state directory is 0700: it holds tokens and the events' raw bodies."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


_MAGIC = b"SQLite format 3\x00"


def check_header(path: Path) -> None:
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
    wal = wal_path(path)
    recovering = wal.exists() and wal.stat().st_size > 0  # the WAL may hold the missing pages
    if size % page_size or (
        not recovering and changed == valid_for and pages and pages * page_size > size
    ):
        raise OutboxError(
            f"{path} is truncated ({size} bytes, expected {pages * page_size});"
            " restore it from a backup or move it aside to start afresh"
        )


def connect_writer(
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
    # SQLite's own checkpoint runs inside the COMMIT that fills the WAL: on the loop, for tens
    # of milliseconds at a million rows. A Checkpointer runs them on a thread instead.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    if schema:
        conn.executescript(schema)
    return conn


class Checkpointer:
    """Copies the WAL's committed frames into the database, from a connection of its own (made
    on first use), on whichever thread calls `run`; a PASSIVE checkpoint never blocks the
    writer, and lets it start the WAL afresh once every frame is copied."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def run(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
