"""The group commit on real SQLite files: batching, isolation of a failing operation, and
commits moving to the helper thread when storage is slow."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from qbo_events.commit_placement import SLOW_SAMPLES, Placement
from qbo_events.errors import OutboxError
from qbo_events.group_commit import CHECKPOINT_WITHIN, PROBE_EVERY, SYNC_WITHIN, GroupCommit

pytestmark = pytest.mark.anyio

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY);"


def insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
        return n

    return op


def stored(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]


async def test_concurrent_writes_share_commits_and_all_land(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    db.open()
    try:
        results = await asyncio.gather(*(db.run(insert(n)) for n in range(200)))
        assert results == list(range(200))
        assert 1 <= db.commits < 200, db.commits
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == list(range(200))


async def test_a_failing_operation_does_not_undo_its_batch_mates(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    db.open()
    try:
        outcomes = await asyncio.gather(
            db.run(insert(1)),
            db.run(insert(1)),  # the primary key refuses it
            db.run(insert(2)),
            return_exceptions=True,
        )
    finally:
        await db.close()
    assert outcomes[0] == 1 and outcomes[2] == 2
    # The storage edge translates: callers see our error, with SQLite's as its cause.
    assert isinstance(outcomes[1], OutboxError), outcomes[1]
    assert isinstance(outcomes[1].__cause__, sqlite3.IntegrityError)
    assert stored(tmp_path / "o.db") == [1, 2]


async def test_slow_commits_move_to_the_helper_thread_and_still_land(tmp_path: Path) -> None:
    # Any commit is "slow" against a zero threshold: the first one moves the rest off the loop.
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA, slow_commit=0.0)
    db.open()
    try:
        assert not db.threaded
        # Not one slow commit: a run of them (hysteresis) moves the rest off the loop.
        await db.run(insert(0))
        for n in range(-SLOW_SAMPLES, 0):
            await db.run(insert(n))
        assert db.threaded
        results = await asyncio.gather(*(db.run(insert(n)) for n in range(1, 50)))
        assert results == list(range(1, 50))
        assert db.threaded
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == list(range(-SLOW_SAMPLES, 50))


async def test_quick_commits_stay_on_the_loop(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA, slow_commit=60.0)
    db.open()
    try:
        for n in range(20):
            await db.run(insert(n))
        assert not db.threaded
        assert 0.0 < db.commit_seconds < 60.0
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == list(range(20))


async def test_a_closed_database_refuses_work(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    with pytest.raises(OutboxError):
        await db.run(insert(1))


async def test_only_batches_with_a_durable_operation_are_fsynced(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    db.open()
    try:
        await db.run(insert(1))
        assert db.unsynced_commits == 0
        await db.run(insert(2), durable=False)
        assert db.unsynced_commits == 1
        # A durable operation in the batch makes the whole batch durable.
        await asyncio.gather(db.run(insert(3), durable=False), db.run(insert(4)))
        assert db.unsynced_commits == 1
        assert db._conn is not None
        assert db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == [1, 2, 3, 4]


async def test_durability_normal_never_counts_a_skipped_fsync(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "normal", on_open=SCHEMA)
    db.open()
    try:
        await db.run(insert(1))
        await db.run(insert(2), durable=False)
        assert db.unsynced_commits == 0
        assert db._conn is not None
        assert db._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == [1, 2]


async def test_unsynced_commits_get_an_fsync_of_the_wal_soon(tmp_path: Path) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    db.open()
    try:
        await db.run(insert(1), durable=False)
        assert db.awaiting_sync
        for _ in range(int(10 * SYNC_WITHIN / 0.05)):  # a deadline of ten times the promise
            if not db.awaiting_sync:
                break
            await asyncio.sleep(0.05)
        assert not db.awaiting_sync
        # A durable commit covers the unsynced ones before it: nothing left to wait for.
        await db.run(insert(2), durable=False)
        await db.run(insert(3))
        assert not db.awaiting_sync
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == [1, 2, 3]


async def test_work_handed_over_from_commit_callbacks_runs_without_recursion(
    tmp_path: Path,
) -> None:
    """Each commit's callback hands over the next operation: thousands in a row, as a burst of
    bookkeeping may, must neither recurse nor stop."""
    db = GroupCommit(tmp_path / "o.db", "normal", on_open=SCHEMA)
    db.open()
    total = 3000
    last: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def chain(n: int) -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        on_commit = (lambda _: chain(n + 1)) if n + 1 < total else None
        db.submit(insert(n), last if n + 1 == total else future, on_commit)

    try:
        chain(0)
        assert await asyncio.wait_for(last, 60) == total - 1
    finally:
        await db.close()
    assert len(stored(tmp_path / "o.db")) == total


FK_SCHEMA = """
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS child (
    n INTEGER REFERENCES t (n) DEFERRABLE INITIALLY DEFERRED
);
"""


def orphan(conn: sqlite3.Connection) -> None:
    # Passes when run; the deferred foreign key fails the COMMIT itself.
    conn.execute("INSERT INTO child (n) VALUES (999)")


@pytest.mark.parametrize("slow_commit", [60.0, 0.0], ids=["on the loop", "on the thread"])
async def test_a_failed_commit_fails_its_batch_and_the_next_one_commits(
    tmp_path: Path, slow_commit: float
) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=FK_SCHEMA, slow_commit=slow_commit)
    db.open()
    try:
        for n in range(-SLOW_SAMPLES, 1):  # with a zero threshold, the commits after are threaded
            await db.run(insert(n))
        first = await asyncio.gather(db.run(insert(1)), db.run(orphan), return_exceptions=True)
        assert all(isinstance(outcome, OutboxError) for outcome in first), first
        assert not db.writable
        assert await db.run(insert(2)) == 2
        assert db.writable
    finally:
        await db.close()
    assert stored(tmp_path / "o.db") == [*range(-SLOW_SAMPLES, 1), 2]


def transitions(series: list[tuple[float, float]], slow: float = 0.005) -> int:
    """Feed (monotonic time, commit seconds) pairs; count the moves between loop and thread."""
    placement = Placement(slow)
    moves, threaded = 0, False
    for now, took in series:
        moves += placement.threaded != threaded
        threaded = placement.threaded
        placement.record(took, now)
    return moves


def test_a_noisy_idle_machine_does_not_flip_the_placement_back_and_forth() -> None:
    # 14 minutes of an idle daemon: a commit every second or so, mostly a fraction of a
    # millisecond, with the odd fsync that a busy disk holds up for 10 to 60 ms.
    moments = random.Random(11)
    series, now = [], 0.0
    while now < 14 * 60:
        now += moments.uniform(0.2, 2.0)
        spike = moments.random() < 0.06
        series.append(
            (now, moments.uniform(0.010, 0.060) if spike else moments.uniform(2e-4, 9e-4))
        )
    assert transitions(series) <= 2


def test_sustained_slow_storage_still_moves_commits_off_the_loop_and_back() -> None:
    slow = [(t * 0.01, 0.02) for t in range(200)]  # two seconds of 20 ms commits
    quick = [(2.0 + t * 0.1, 3e-4) for t in range(1200)]  # then two minutes of quick ones
    placement = Placement(0.005)
    for now, took in slow:
        placement.record(took, now)
    assert placement.threaded
    for now, took in quick:
        placement.record(took, now)
    assert not placement.threaded


async def test_a_probe_finds_the_storage_writable_again_when_nothing_else_writes(
    tmp_path: Path,
) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=FK_SCHEMA)
    db.open()
    try:
        with pytest.raises(OutboxError):
            await db.run(orphan)
        assert not db.writable and db.fault is not None
        for _ in range(int(20 * PROBE_EVERY / 0.05)):  # a deadline of twenty probes
            if db.writable:
                break
            await asyncio.sleep(0.05)
        assert db.writable and db.fault is None
    finally:
        await db.close()


PAD_SCHEMA = "CREATE TABLE IF NOT EXISTS pad (b BLOB);"


def cap_at_current_size(conn: sqlite3.Connection) -> None:
    # SQLite's own "database or disk is full" (SQLITE_FULL) for any write that needs a new page.
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {pages}")


def data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


async def test_a_probe_that_shares_its_batch_with_a_failing_write_keeps_probing(
    tmp_path: Path,
) -> None:
    """A probe whose batch-mate hits a full database commits, but proves nothing: the outbox
    stays unwritable, and must keep probing until a probe commits on its own."""
    db = GroupCommit(tmp_path / "o.db", "full", on_open=PAD_SCHEMA)
    db.open()
    loop = asyncio.get_running_loop()
    filling = True

    def grow(conn: sqlite3.Connection) -> None:
        # Hands over its successor while it runs: every batch from now on holds one of these,
        # so the probe, whenever it comes, shares its batch with a write that fails.
        if filling:
            follower: asyncio.Future[None] = loop.create_future()
            follower.add_done_callback(lambda f: f.cancelled() or f.exception())
            db.submit(grow, follower)
        conn.execute("INSERT INTO pad (b) VALUES (zeroblob(65536))")

    watcher = sqlite3.connect(tmp_path / "o.db")
    try:
        await db.run(cap_at_current_size)
        with pytest.raises(OutboxError):
            await db.run(grow)
        assert not db.writable and db.fault is not None and "full" in db.fault
        seen = data_version(watcher)
        # The probe's write (the header's user_version) changes the data version.
        for _ in range(int(20 * PROBE_EVERY / 0.05)):
            if data_version(watcher) != seen:
                break
            await asyncio.sleep(0.05)
        assert data_version(watcher) != seen, "no probe committed"
        assert not db.writable
        filling = False
        for _ in range(int(20 * PROBE_EVERY / 0.05)):  # a deadline of twenty probes
            if db.writable:
                break
            await asyncio.sleep(0.05)
        assert db.writable, "the probes stopped while the outbox was still unwritable"
    finally:
        filling = False
        watcher.close()
        await db.close()


def count_to(n: int) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        return int(
            conn.execute(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?)"
                " SELECT COUNT(*) FROM c",
                (n,),
            ).fetchone()[0]
        )

    return op


async def test_a_brief_read_stays_on_the_loop_and_a_long_one_moves_to_a_thread(
    tmp_path: Path,
) -> None:
    db = GroupCommit(tmp_path / "o.db", "full", on_open=SCHEMA)
    db.open()
    try:
        await db.run(insert(1))
        assert await db.reads.read_briefly(lambda conn: stored(tmp_path / "o.db")) == [1]
        assert await db.reads.read_briefly(count_to(10)) == 10
        assert db.reads.moved == 0
        # Millions of steps: given up on the loop, finished on the thread, the same answer.
        assert await db.reads.read_briefly(count_to(3_000_000)) == 3_000_000
        assert db.reads.moved == 1
        # The loop's connection is left as it was: no handler stops the next read.
        assert db.read(count_to(3_000_000)) == 3_000_000
    finally:
        await db.close()


async def test_committed_frames_reach_the_database_file_soon(tmp_path: Path) -> None:
    """SQLite's own checkpoint is off (it would run inside a COMMIT on the loop): the
    checkpoint on the helper thread copies the WAL into the database file."""
    path = tmp_path / "o.db"
    db = GroupCommit(path, "full", on_open=PAD_SCHEMA)
    db.open()
    try:
        for _ in range(200):  # about 400 pages: below SQLite's own threshold of 1000
            await db.run(lambda conn: conn.execute("INSERT INTO pad (b) VALUES (zeroblob(8000))"))
        for _ in range(int(20 * CHECKPOINT_WITHIN / 0.05)):
            if path.stat().st_size > 200 * 8000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > 200 * 8000, path.stat().st_size
        assert db._conn is not None
        assert db._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        await db.close()
