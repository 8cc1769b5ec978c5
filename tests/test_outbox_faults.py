"""Storage faults on a real SQLite outbox, in process: every failure reaches callers as
OutboxError, the senders outlive it, and work resumes once the storage is back."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import structlog
from harness import Receiver
from qbo_events.config import DeliveryConfig
from qbo_events.errors import OutboxError, OutboxFull
from qbo_events.events import Change, EventType, Source, event_id
from qbo_events.events import Event as QboEvent
from qbo_events.group_commit import PROBE_EVERY
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox
from qbo_events.sinks.sender import Sender, Target
from test_storage_faults import fill, tmpfs

pytestmark = pytest.mark.anyio


def make_event(n: int, instance: str = "acme", pad: int = 0) -> QboEvent:
    change = Change(
        realm_id="1",
        entity="Invoice",
        object_id=str(n),
        event_type=EventType.CREATED,
        date="2026-01-01T00:00:00Z",
        source=Source.WEBHOOK,
        raw={"Id": str(n), "pad": "x" * pad} if pad else {"Id": str(n)},
    )
    return QboEvent(
        event_id=event_id(instance, change),
        instance=instance,
        object_type="invoices",
        change=change,
    )


def sabotage(path: Path, sql: str) -> None:
    """Change the database behind the outbox's back, as another process could."""
    with sqlite3.connect(path) as conn:
        conn.executescript(sql)


HIDE = "ALTER TABLE outbox RENAME TO outbox_hidden;"
SHOW = "ALTER TABLE outbox_hidden RENAME TO outbox;"
REFUSE_DELETES = """
CREATE TRIGGER refuse_deletes BEFORE DELETE ON outbox
BEGIN SELECT RAISE(ABORT, 'deletes refused'); END;
"""
ALLOW_DELETES = "DROP TRIGGER refuse_deletes;"


async def test_reads_and_writes_that_fail_raise_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path) as outbox:
        await outbox.accept([make_event(1)])
        sabotage(path, HIDE)
        with pytest.raises(OutboxError):
            await outbox.counts()
        with pytest.raises(OutboxError):
            await outbox.instances_with_work()
        with pytest.raises(OutboxError):
            await outbox.due("acme", 10)
        with pytest.raises(OutboxError):
            await outbox.accept([make_event(2)])
        sabotage(path, SHOW)
        assert await outbox.accept([make_event(3)]) == 1
        assert (await outbox.counts()).pending == 2


def sender_for(outbox: Outbox, http: aiohttp.ClientSession, receiver: Receiver) -> Sender:
    return Sender(
        outbox,
        http,
        delivery=DeliveryConfig(retry_schedule=(0.2,)),
        targets={"acme": Target(instance="acme", url=receiver.url, key=None, tags=())},
        metrics=Metrics(),
    )


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Check `condition` each 20 ms until it holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition(), f"timed out after {seconds} s waiting for {what}"


async def test_senders_outlive_a_failing_outbox_and_deliver_once_it_is_back(
    tmp_path: Path,
) -> None:
    receiver = Receiver(key=None).start()
    path = tmp_path / "outbox.sqlite3"
    try:
        async with Outbox(path) as outbox, aiohttp.ClientSession() as http:
            await outbox.accept([make_event(n) for n in range(5)])
            # Neither the start-up scan nor the rescans can read the rows for a while.
            sabotage(path, HIDE)
            sender = sender_for(outbox, http, receiver)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                run = group.create_task(sender.run(stop))
                await asyncio.sleep(1.5)
                assert not run.done(), "the senders stopped on a storage failure"
                sabotage(path, SHOW)
                await wait_until(lambda: receiver.count() >= 5, 30, "all five delivered")
                await wait_until(lambda: outbox.pending == 0, 30, "the acks recorded")
                stop.set()
            assert sorted(int(e["objectId"]) for e in receiver.events()) == list(range(5))
    finally:
        receiver.stop()


async def test_senders_outlive_acks_that_cannot_be_written(tmp_path: Path) -> None:
    receiver = Receiver(key=None).start()
    path = tmp_path / "outbox.sqlite3"
    try:
        async with Outbox(path) as outbox, aiohttp.ClientSession() as http:
            sabotage(path, REFUSE_DELETES)
            await outbox.accept([make_event(n) for n in range(3)])
            sender = sender_for(outbox, http, receiver)
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                run = group.create_task(sender.run(stop))
                await wait_until(lambda: receiver.count() >= 3, 30, "first attempts")
                await asyncio.sleep(0.5)
                assert not run.done() and outbox.pending == 3
                sabotage(path, ALLOW_DELETES)
                await wait_until(lambda: outbox.pending == 0, 30, "the acks recorded")
                stop.set()
            assert {int(e["objectId"]) for e in receiver.events()} == {0, 1, 2}
    finally:
        receiver.stop()


async def test_a_stored_event_that_cannot_be_decoded_is_listed_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path) as outbox:
        await outbox.accept([make_event(1), make_event(2)])
    sabotage(path, "UPDATE outbox SET body = x'c1' WHERE seq = 1;")  # 0xc1: never valid msgpack
    async with Outbox(path, create=False) as outbox:
        rows = await outbox.listing(dead=False, instance=None, limit=10)
    assert [(r.seq, r.object_type) for r in rows] == [(1, "?"), (2, "invoices")]
    assert rows[0].last_error == "the stored event cannot be decoded"
    assert rows[0].event_id == make_event(1).event_id


def undelivered(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
        )


async def test_a_clean_commit_on_a_full_disk_leaves_intake_refused_until_there_is_room(
    tmp_path: Path,
) -> None:
    """An ack that fits in space the WAL already holds commits on a full disk: it must not end
    the unwritable state, or intake reopens, the next webhook fails, and the state flaps."""
    with tmpfs(tmp_path / "state", "8m") as state:
        path = state / "outbox.sqlite3"
        async with Outbox(path, durability="normal") as outbox:
            for n in range(40):  # a WAL of about 1.3 MB
                await outbox.accept([make_event(n, pad=4000)])
            # The WAL's frames copied into the database: the next writes reuse the WAL's space.
            sabotage(path, "PRAGMA wal_checkpoint(PASSIVE);")
            filler = fill(state)
            with pytest.raises(OutboxError):
                await outbox.accept([make_event(n, pad=4000) for n in range(1000, 1600)])
            assert not outbox.writable and outbox.fault and "full" in outbox.fault
            await outbox.delivered(1)  # fits: committed, on a disk with no room
            assert outbox.pending == 39
            await asyncio.sleep(0)
            assert not outbox.writable, "a write that happened to fit ended the full-disk state"
            with pytest.raises(OutboxError):
                await outbox.accept([make_event(2000)])
            filler.unlink()
            await wait_until(lambda: outbox.writable, 20 * PROBE_EVERY, "the probe to find room")
            assert await outbox.accept([make_event(2000)]) == 1


async def test_the_rescan_corrects_pending_while_accepts_keep_committing(tmp_path: Path) -> None:
    """Rows re-queued by another process (`deliveries retry`) must show in `pending` (what
    max_pending bounds) after a rescan, even when the outbox never stops committing."""
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path, durability="normal") as outbox:
        await outbox.accept([make_event(n) for n in range(50)])
        for seq in range(1, 31):
            await outbox.dead_letter(seq, 3, "HTTP 500")
        assert outbox.pending == 20
        sabotage(path, "UPDATE outbox SET state = 'pending' WHERE state = 'dead';")
        stop = asyncio.Event()

        async def keep_accepting(first: int) -> None:
            n = first
            while not stop.is_set():
                await outbox.accept([make_event(n)])
                n += 1

        async with asyncio.TaskGroup() as group:
            for lane in range(4):
                group.create_task(keep_accepting(10_000 * (lane + 1)))
            for _ in range(5):
                await outbox.instances_with_work()
            stop.set()
        assert outbox.pending == undelivered(path)


async def test_concurrent_counts_share_one_scan(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path) as outbox:
        await outbox.accept([make_event(n) for n in range(10)])
        counts = await asyncio.gather(*(outbox.counts() for _ in range(10)))
        assert counts[0].pending == 10
        assert all(c is counts[0] for c in counts), "each caller ran a scan of its own"
        # Fresh again soon: a /status poll sees a new row within about a second.
        await outbox.accept([make_event(10)])
        seen: list[int] = []

        async def newest() -> None:
            seen.append((await outbox.counts()).pending)

        for _ in range(int(10 / 0.05)):
            await newest()
            if seen[-1] == 11:
                break
            await asyncio.sleep(0.05)
        assert seen[-1] == 11, seen


def build_dead_rows(path: Path, rows: int, pad: int) -> None:
    """Rows with large bodies, all dead-lettered: a count reads every one, a rescan none."""
    body = b"\x00" * pad
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO outbox (event_id, instance, object_key, body, state, next_at,"
            " accepted_at) VALUES (?, 'acme', ?, ?, 'dead', 0, 0)",
            ((f"evt_{n}", f"k{n}", body) for n in range(rows)),
        )
        conn.execute("COMMIT")


async def test_a_rescan_does_not_queue_behind_a_status_count(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path):
        pass
    build_dead_rows(path, 20_000, 3000)
    async with Outbox(path) as outbox:
        await outbox.accept([make_event(1)])
        async with asyncio.TaskGroup() as group:
            counting = group.create_task(outbox.counts())
            await asyncio.sleep(0)  # its scan is handed to its thread
            work = await outbox.instances_with_work()
            rescan_first = not counting.done()
        assert set(work) == {"acme"}
        assert rescan_first, "the rescan waited for the count's scan"
        assert counting.result().dead == 20_000


async def test_read_only_commands_start_no_threads_and_count_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    async with Outbox(path) as outbox:
        await outbox.accept([make_event(n) for n in range(3)])
    async with Outbox(path, create=False) as outbox:
        rows = await outbox.listing(dead=False, instance=None, limit=10)
        threads = [t.name for t in threading.enumerate() if t.name.startswith("outbox")]
        assert threads == []
        assert outbox.pending == 0  # not counted: the commands never use it
        assert await outbox.requeue_dead(instance=None, event_id=None) == 0
    assert len(rows) == 3


async def test_pushing_back_at_max_pending_is_logged_once_each_way(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.sqlite3", max_pending=2) as outbox:
        await outbox.accept([make_event(1), make_event(2)])
        with structlog.testing.capture_logs() as logs:
            for n in range(3, 8):
                with pytest.raises(OutboxFull):
                    await outbox.accept([make_event(n)])
                # What a webhook refused for it logs: the outbox has said why already.
                outbox.log_refusal(structlog.get_logger("test"), "webhook refused", level="warning")
            rows, _ = await outbox.due("acme", 1)
            await outbox.delivered(rows[0].seq)
            assert await outbox.accept([make_event(8)]) == 1
    loud = [(e["log_level"], e["event"]) for e in logs if e["log_level"] != "debug"]
    assert len(loud) == 2, loud
    assert loud[0][0] == "warning" and "max_pending" in loud[0][1]
    assert loud[1][0] == "info" and "resumed" in loud[1][1]
