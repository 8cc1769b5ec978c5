"""Group commit over SQLite: write operations batched into one transaction, reads on their own.

Callers hand writes over as operations (functions of a connection) and await their futures.
Operations run on the event loop's thread; those handed over within one loop turn, or while a
commit runs on the helper thread, form one batch. Reads use a second connection: they see
committed rows and never wait for a commit (`reads`, the `Reads` of `sqlite_reads`).

The COMMIT (with durability "full", an fsync) runs on the loop too while storage is quick: a
commit blocks it for well under a millisecond, where handing it to a thread cost three times
that in the thread's wake-up on a busy machine. When commits turn slow, they move to the helper
thread so that the loop keeps serving, and come back once they have been quick for a while
(`commit_placement`): one slow fsync on an idle machine moves nothing.

Every failure of the storage reaches callers as `OutboxError`. A failed commit, or an operation
failing on the storage itself (a full disk, an I/O error, a read-only file), makes the database
unwritable: one line is logged, and a probe tries a small write every `PROBE_EVERY` seconds for
as long as it stays so, so that recovery is found even when nothing else writes. Only a batch
that commits with none of its operations failing on the storage, with `PROBE_FREE_BYTES` free,
makes it writable again.

With durability "full", only a batch holding a durable operation is fsynced. Bookkeeping that a
power cut may take (a delivered row's removal, a retry's new time: at worst an event is sent
again) commits without one; the next fsync covers it too, since the WAL is written in order, and
the WAL is fsynced within `SYNC_WITHIN` seconds in any case. The WAL's frames are copied into
the database (a checkpoint) on the helper thread within `CHECKPOINT_WITHIN` seconds of a
commit, never inside a COMMIT on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from qbo_events.commit_placement import SLOW_COMMIT, Placement
from qbo_events.errors import OutboxClosed, OutboxError
from qbo_events.sqlite_files import (
    Checkpointer,
    check_header,
    connect_writer,
    describe,
    free_bytes,
    fsync_file,
    is_storage_fault,
    storage_error,
    wal_path,
)
from qbo_events.sqlite_reads import Reads

log = structlog.get_logger("qbo_events.outbox")
T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
# An operation, the future its caller awaits, what to do once it is committed (run even if the
# caller stopped waiting, so that counters kept beside the database stay true), and whether it
# must survive a power cut.
Pending = tuple[Operation, "asyncio.Future[Any]", "Callable[[Any], None] | None", bool]

SYNC_WITHIN = 1.0  # seconds an unsynced commit may wait for an fsync of the WAL
CHECKPOINT_WITHIN = 1.0  # seconds a commit may wait before its frames are checkpointed
CHECKPOINT_RETRY = 0.01  # seconds to wait for a commit under way before checkpointing
PROBE_EVERY = 1.0  # seconds between write probes while the database cannot be written
# Below this much free space no commit ends the unwritable state, and no probe is tried: a small
# write can succeed in space the WAL already holds while the next real batch still fails, and
# the state would flap.
PROBE_FREE_BYTES = 256 * 1024


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
        self._committer: ThreadPoolExecutor | None = None
        self.reads = Reads(path, self.when_settled)
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
        self._probing = False  # a probe's write is queued or committing
        self._batch_faulted = False
        self._on_settled: list[Callable[[], None]] = []
        # A checkpoint on the helper thread holds batches back, as a commit there does, but
        # settles nothing: readers need not wait for it.
        self._checkpointing = False
        self._placement = Placement(slow_commit)
        self._synchronous = ""  # the connection's PRAGMA synchronous, as last set
        self.unsynced_commits = 0  # committed without an fsync of their own
        self._unsynced = False  # since the last fsync of the WAL
        self._sync_timer: asyncio.TimerHandle | None = None
        self._checkpointer = Checkpointer(path)
        self._checkpoint_timer: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        """Raises OutboxError naming the file when it is missing (with `create` false), is not
        a database, is truncated, or cannot be opened; such a file is left as it is."""
        self._loop = asyncio.get_running_loop()
        if not self._create and not self.path.is_file():
            raise OutboxError(f"no outbox at {self.path} (has the daemon run with this state_dir?)")
        try:
            check_header(self.path)
            self._conn = connect_writer(
                self.path, self.durability, self._schema, create=self._create
            )
            self.reads.open(self._loop)
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise storage_error(f"cannot open the outbox {self.path}", exc) from exc
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="outbox-commit")
        self.writable = True

    async def close(self) -> None:
        """After every operation handed over so far is committed."""
        if self._conn is None:
            return
        await self._idle.wait()
        assert self._committer is not None
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._unsynced:
            self._sync_wal()
        self._committer.shutdown(wait=True)
        self._checkpointer.close()  # the writer, closing last, checkpoints what is left
        self._conn.close()
        self.reads.close()
        self._conn = self._committer = None
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
        return self.reads.read(op)

    def when_settled(self, then: Callable[[], None]) -> None:
        """Call `then` on the loop now, or, while a commit runs on the helper thread (visible
        to readers before its `on_commit` has run), right after that commit is settled."""
        if self._committing:
            self._on_settled.append(then)
        else:
            then()

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
        if self._committing or self._checkpointing:
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
            outcomes, fault = _execute(self._conn, batch)
        except Exception as exc:  # whatever it is, the batch's callers must hear of it
            self.batches += 1
            if is_storage_fault(exc):
                self._unwritable(exc)
            unavailable = storage_error("outbox unavailable", exc)
            _settle(batch, [(False, unavailable)] * len(batch))
            self._next()
            return
        # A batch whose own operations hit a storage fault proves nothing by committing the rest.
        self._batch_faulted = fault is not None
        if fault is not None:
            self._unwritable(fault)
        self._committing = True
        began = time.monotonic()
        if self._placement.threaded:
            commit = self._loop.run_in_executor(self._committer, _timed_commit, self._conn)
            commit.add_done_callback(
                lambda done: self._committed(
                    done.exception(),
                    0.0 if done.exception() else done.result(),
                    batch,
                    outcomes,
                    fsync=fsync,
                )
            )
            return
        error: BaseException | None = None
        try:
            _commit(self._conn)
        except Exception as exc:  # whatever it is, the batch's callers must hear of it
            error = exc
        self._committed(error, time.monotonic() - began, batch, outcomes, fsync=fsync)

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
    ) -> None:
        self._committing = False
        self.batches += 1
        # /readyz reports a database that cannot commit (a full disk, say) until a batch
        # commits cleanly with room to spare: a write that fits in space the WAL already
        # holds proves nothing while the disk is full.
        if error is not None:
            self._unwritable(error)
        elif not self.writable and not self._batch_faulted and self._has_room():
            self._writable_again()
        if not self.writable:
            self._schedule_probe()
        if error is None:
            self.commits += 1
            self._placement.record(took, time.monotonic())
            if self._checkpoint_timer is None and self._loop is not None:
                self._checkpoint_timer = self._loop.call_later(CHECKPOINT_WITHIN, self._checkpoint)
            if fsync:
                self._unsynced = False
            elif self.durability == "full":
                self.unsynced_commits += 1
                self._unsynced = True
                if self._sync_timer is None and self._loop is not None:
                    self._sync_timer = self._loop.call_later(SYNC_WITHIN, self._sync_wal)
        else:
            outcomes = [(False, storage_error("outbox commit failed", error))] * len(batch)
        try:
            _settle(batch, outcomes)
        finally:
            settled, self._on_settled = self._on_settled, []
            for then in settled:
                then()
            self._next()

    def _unwritable(self, error: BaseException) -> None:
        """The storage failed: say so once, and probe until a write commits again."""
        self.fault = describe(error)
        if self.writable:
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
        """Idempotent: one probe at a time, timed or under way."""
        if self._probe_timer is not None or self._probing:
            return
        if self._loop is not None and self._conn is not None:
            self._probe_timer = self._loop.call_later(PROBE_EVERY, self._probe)

    def _has_room(self) -> bool:
        try:
            return free_bytes(self.path.parent) >= PROBE_FREE_BYTES
        except OSError:
            return False

    def _probe(self) -> None:
        """A small durable write, once the file system has room again: a batch committing
        cleanly is what makes the database writable (in `_committed`)."""
        self._probe_timer = None
        if self.writable or self._conn is None or self._loop is None:
            return
        if not self._has_room():
            self._schedule_probe()
            return
        done: asyncio.Future[None] = self._loop.create_future()
        done.add_done_callback(self._probed)
        self._probing = True
        self.submit(_touch, done)

    def _probed(self, done: asyncio.Future[None]) -> None:
        # Whatever became of the probe (its batch-mates may have failed on the storage while
        # it committed), probing goes on for as long as the database is unwritable.
        self._probing = False
        if not done.cancelled():
            done.exception()  # seen here: nobody else awaits the probe
        if not self.writable:
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
        done = self._loop.run_in_executor(self._committer, fsync_file, wal_path(self.path))
        done.add_done_callback(self._wal_synced)

    def _checkpoint(self) -> None:
        """Checkpoint on the helper thread, in place of a commit: batches wait for it rather
        than commit beside it. A commit's fsync beside the checkpoint's waits on it (one
        journal on ext4), and inline that held the loop for up to two seconds."""
        self._checkpoint_timer = None
        if self._committer is None or self._loop is None:
            return
        if self._committing:
            self._checkpoint_timer = self._loop.call_later(CHECKPOINT_RETRY, self._checkpoint)
            return
        self._checkpointing = True
        done = self._loop.run_in_executor(self._committer, self._checkpointer.run)
        done.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpointing = False
        self._next()
        error = done.exception()
        if error is not None:
            # The frames stay in the WAL, and the next commit's checkpoint copies them. While
            # the storage fails, the outbox has said so already.
            (log.warning if self.writable else log.debug)(
                "outbox: checkpoint of the WAL failed", error=describe(error)
            )

    def _wal_synced(self, done: asyncio.Future[None]) -> None:
        error = done.exception()
        if error is not None:
            self._unsynced = True
            log.warning("outbox: fsync of the WAL failed", error=str(error))


def _execute(
    conn: sqlite3.Connection, batch: list[Pending]
) -> tuple[list[tuple[bool, Any]], Exception | None]:
    """Run the batch in one open transaction. An operation that raises is left out and the
    rest run again from a clean start, so that it cannot undo its batch-mates' work. Also
    returns the last failure that was the storage's own (a full disk, an I/O error), if any."""
    if conn.in_transaction:  # left open by a ROLLBACK that failed; every BEGIN would fail
        conn.execute("ROLLBACK")
    failed: dict[int, OutboxError] = {}
    fault: Exception | None = None
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
                failed[index] = storage_error("outbox write failed", exc)
                if is_storage_fault(exc):
                    fault = exc
                break
        else:
            return outcomes, fault


def _touch(conn: sqlite3.Connection) -> None:
    """The probe's write: the header's user_version, rewritten with its own value."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(f"PRAGMA user_version = {version}")


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
