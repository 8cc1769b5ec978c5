"""The outbox's reads: a connection for quick reads on the loop, and a reader thread for each
kind of read that can take long (whole-table counts for /status, the senders' rescan, their
fetches), so that the loop keeps serving and a /status at a million rows never holds up a
delivery. Reads see committed rows and never wait for a commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qbo_events.errors import OutboxClosed
from qbo_events.sqlite_files import ReaderThread, connect_reader, storage_error

T = TypeVar("T")
P = TypeVar("P")
BRIEF_READ = 0.002  # seconds of SQLite's work a read on the loop may take before it moves


class Reads:
    """`when_settled` is the writer's: it calls its argument at a moment when every committed
    batch's `on_commit` has run."""

    def __init__(self, path: Path, when_settled: Callable[[Callable[[], None]], None]) -> None:
        self.path = path
        self._when_settled = when_settled
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scans = ReaderThread("outbox-scan")
        self._rescans = ReaderThread("outbox-rescan")
        self._fetches = ReaderThread("outbox-fetch")
        self.moved = 0  # brief reads that took too long and ran again on a thread

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = connect_reader(self.path)
        self._loop = loop
        for lane in self._lanes:
            lane.open(self.path)

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        if self._conn is not None:
            self._conn.close()
        self._conn = self._loop = None

    @property
    def _lanes(self) -> tuple[ReaderThread, ...]:
        return self._scans, self._rescans, self._fetches

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """A quick read on the loop's thread (an index lookup, a few rows)."""
        if self._conn is None:
            raise OutboxClosed("the outbox is closed")
        try:
            return op(self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise storage_error("outbox read failed", exc) from exc

    async def read_briefly(
        self, op: Callable[[sqlite3.Connection], T], *, within: float = BRIEF_READ
    ) -> T:
        """A read that is usually quick, on the loop's thread; one that takes SQLite more than
        `within` seconds is given up and run again on the fetch thread. `op` must have no
        effects but its result."""
        if self._conn is None:
            raise OutboxClosed("the outbox is closed")
        give_up = time.perf_counter() + within
        self._conn.set_progress_handler(lambda: time.perf_counter() > give_up, 1000)
        try:
            return op(self._conn)
        except (sqlite3.Error, OSError) as exc:
            if getattr(exc, "sqlite_errorcode", 0) != sqlite3.SQLITE_INTERRUPT:
                raise storage_error("outbox read failed", exc) from exc
        finally:
            self._conn.set_progress_handler(None, 0)
        self.moved += 1
        return await self.fetch(op)

    def scan(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """A whole-table read on the scan thread (SQLite lets go of the GIL while it steps, so
        the loop keeps turning). The future completes whether or not anyone still awaits it,
        so that callers can share one scan."""
        if self._loop is None:
            raise OutboxClosed("the outbox is closed")
        return asyncio.wrap_future(self._scans.submit(op), loop=self._loop)

    async def fetch(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """A read that may take long, on the fetch thread: the senders' own lane."""
        if self._loop is None:
            raise OutboxClosed("the outbox is closed")
        return await self._fetches.run(self._loop, op)

    async def read_pinned(
        self, pin: Callable[[], P], op: Callable[[sqlite3.Connection], T]
    ) -> tuple[P, T]:
        """`op` on the rescan thread, reading the database as it was when `pin()` ran on the
        loop: at a moment when every committed batch's `on_commit` has run, so that counters
        kept beside the database (read by `pin`) and what `op` reads agree."""
        loop = self._loop
        if loop is None:
            raise OutboxClosed("the outbox is closed")
        started: asyncio.Future[tuple[P, asyncio.Future[T]]] = loop.create_future()

        def start() -> None:
            if started.done():  # the caller stopped waiting: nothing begun, nothing to end
                return
            if not self._rescans.idle:  # a read its caller left is still running
                self._rescans.when_idle(loop, lambda: self._when_settled(start))
                return
            try:
                job = self._rescans.submit_pinned(op)
                pinned = pin()
            except (sqlite3.Error, OSError) as exc:
                started.set_exception(storage_error("outbox read failed", exc))
                return
            except Exception as exc:  # the caller must hear of it, whatever it is
                started.set_exception(exc)
                return
            started.set_result((pinned, asyncio.wrap_future(job, loop=loop)))

        self._when_settled(start)
        pinned, job = await started
        return pinned, await job
