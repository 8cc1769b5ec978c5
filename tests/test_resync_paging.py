"""The resync's Query paging (pure), and its job table through a real outbox."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from qbo_events import qbtime
from qbo_events.events import Resync, ResyncStatus, resync_event
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.paging import advance, statement
from qbo_events.resync_store import (
    COMPLETED,
    Position,
    ResyncError,
    ResyncStore,
    finish,
    progress,
)
from qbo_events.sinks.payload import message

BASE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def obj(object_id: int, second: int) -> dict[str, Any]:
    at = (BASE + dt.timedelta(seconds=second)).isoformat()
    return {"Id": str(object_id), "MetaData": {"CreateTime": at, "LastUpdatedTime": at}}


class Company:
    """Evaluates the statements' WHERE, ORDERBY and STARTPOSITION the way QuickBooks does."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {o["Id"]: o for o in objects}

    def page(self, position: Position, size: int) -> list[dict[str, Any]]:
        after = qbtime.parse(position.after) if position.after else None
        rows = sorted(
            (o for o in self.objects.values() if after is None or _at(o) >= after),
            key=_at,
        )
        return rows[position.start - 1 : position.start - 1 + size]


def _at(o: dict[str, Any]) -> dt.datetime:
    return qbtime.parse(o["MetaData"]["LastUpdatedTime"])


def read_all(
    company: Company, size: int, between: Any = None
) -> tuple[list[str], list[Position | None]]:
    read: list[str] = []
    positions: list[Position | None] = []
    position: Position | None = Position()
    while position is not None:
        fresh, position = advance(position, company.page(position, size), size)
        read += [o["Id"] for o in fresh]
        positions.append(position)
        if between is not None:
            between(len(positions))
    return read, positions


def test_the_statement_pages_by_last_updated_time_never_by_id() -> None:
    first = statement("Invoice", Position(), since=None, with_inactive=False)
    assert first == (
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
    )
    later = statement(
        "Customer",
        Position("2026-11-01T00:00:05+00:00", 1001),
        since="2026-10-01T00:00:00Z",
        with_inactive=True,
    )
    assert "WHERE MetaData.LastUpdatedTime >= '2026-11-01T00:00:05+00:00'" in later
    assert "AND Active IN (true, false)" in later and "STARTPOSITION 1001" in later
    assert "ORDERBY Id" not in later
    since = statement("Bill", Position(), since="2026-10-01T00:00:00Z", with_inactive=False)
    assert "WHERE MetaData.LastUpdatedTime >= '2026-10-01T00:00:00+00:00'" in since


def test_every_object_is_read_once_across_pages_sharing_seconds() -> None:
    # Three objects a second: page boundaries fall inside seconds.
    company = Company([obj(i, i // 3) for i in range(1, 50)])
    read, positions = read_all(company, 7)
    assert sorted(read, key=int) == [str(i) for i in range(1, 50)]
    assert len(read) == len(set(read))
    assert positions[-1] is None


def test_a_page_of_one_second_goes_on_by_offset() -> None:
    company = Company([obj(i, 0) for i in range(1, 21)] + [obj(i, 5) for i in range(21, 25)])
    read, positions = read_all(company, 6)
    assert sorted(read, key=int) == [str(i) for i in range(1, 25)]
    assert len(read) == len(set(read))
    assert any(p is not None and p.start > 1 for p in positions)


def test_an_object_changed_while_paging_shifts_no_other_out_of_reach() -> None:
    company = Company([obj(i, i) for i in range(1, 40)])

    def change(pages: int) -> None:
        if pages == 2:
            # An object already read is updated: it moves to the end, and is read again.
            company.objects["3"] = obj(3, 100)

    read, _ = read_all(company, 5, change)
    assert set(read) == {str(i) for i in range(1, 40)}
    assert read.count("3") == 2 and len(read) == 40


def test_the_job_table_one_active_job_progress_and_end(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
            store = ResyncStore(outbox)
            job = await store.create("a", ("invoices", "bills"), None, 100.0)
            with pytest.raises(ResyncError):
                await store.create("a", ("invoices",), None, 101.0)
            assert [j.id for j in store.active()] == [job.id]
            await store.start(job.id, 102.0)
            position = Position("2026-11-01T00:00:05+00:00", 1, ("7",))
            await outbox.accept([], dedupe=False, also=progress(job.id, 0, position, 1000))
            now = store.get(job.id)
            assert now is not None and now.position == position and now.objects == 1000
            assert now.summary()["state"] == "running"
            cancelled = await store.cancel("a")
            assert cancelled.cancel and store.latest("a") == cancelled
            end = resync_event(
                "a",
                Resync(
                    status=ResyncStatus.CANCELLED,
                    resync_id=job.id,
                    realm_id="1",
                    resources=job.resources,
                    objects=1000,
                    started="2026-11-01T00:00:00Z",
                    finished="2026-11-01T00:01:00Z",
                ),
            )
            assert await outbox.accept([end], also=finish(job.id, COMPLETED, 200.0)) == 1
            assert store.active() == []
            with pytest.raises(ResyncError):
                await store.cancel("a")
            body = message(end, instance_name="a", tags=())
            assert body["events"][0]["eventType"] == "RESYNC"
            assert body["events"][0]["status"] == "cancelled"
            assert body["events"][0]["resyncId"] == job.id

    asyncio.run(go())


def test_accept_without_dedupe_stores_an_event_seen_before(tmp_path: Path) -> None:
    async def go() -> None:
        async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
            end = resync_event(
                "a",
                Resync(
                    status=ResyncStatus.COMPLETED,
                    resync_id="rs_1",
                    realm_id="1",
                    resources=("bills",),
                    objects=0,
                    started="2026-11-01T00:00:00Z",
                    finished="2026-11-01T00:01:00Z",
                ),
            )
            assert await outbox.accept([end]) == 1
            assert await outbox.accept([end]) == 0
            assert await outbox.accept([end], dedupe=False) == 1
            assert outbox.pending == 2

    asyncio.run(go())
