"""Storage faults on a real SQLite outbox, in process: every failure reaches callers as
OutboxError, the senders outlive it, and work resumes once the storage is back."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from harness import Receiver
from qbo_events.config import DeliveryConfig
from qbo_events.errors import OutboxError
from qbo_events.events import Change, EventType, Source, event_id
from qbo_events.events import Event as QboEvent
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox
from qbo_events.sinks.sender import Sender, Target

pytestmark = pytest.mark.anyio


def make_event(n: int, instance: str = "acme") -> QboEvent:
    change = Change(
        realm_id="1",
        entity="Invoice",
        object_id=str(n),
        event_type=EventType.CREATED,
        date="2026-01-01T00:00:00Z",
        source=Source.WEBHOOK,
        raw={"Id": str(n)},
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
