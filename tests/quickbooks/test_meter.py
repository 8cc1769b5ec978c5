"""The call meter: month arithmetic, counting by kind, durable counts and the turn of the month."""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
from pathlib import Path

import pytest
from qbo_events.errors import OutboxError
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.meter import (
    CallMeter,
    elapsed_fraction,
    kind_of,
    month_of,
    months_back,
    projection,
)

ONE = "SELECT * FROM Customer MAXRESULTS 1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = at(text)

    def __call__(self) -> float:
        return self.now


def test_months_are_utc_calendar_months() -> None:
    assert month_of(at("2026-11-30T23:59:59")) == "2026-11"
    assert month_of(at("2026-12-01T00:00:00")) == "2026-12"
    assert months_back("2026-12", 12) == "2025-12"
    assert months_back("2026-01", 1) == "2025-12"


def test_the_projection_divides_by_the_elapsed_part_of_the_month() -> None:
    # 30 days in November: the 16th at midnight is half way.
    assert elapsed_fraction(at("2026-11-16T00:00:00")) == pytest.approx(0.5)
    assert projection(1000, at("2026-11-16T00:00:00")) == 2000
    # February 2028 has 29 days; a quarter through is day 8 at 06:00.
    assert elapsed_fraction(at("2028-02-08T06:00:00")) == pytest.approx(0.25)
    assert calendar.monthrange(2028, 2)[1] == 29
    # The first second of a month does not divide by zero.
    assert projection(3, at("2026-12-01T00:00:00")) > 0


def test_each_path_has_its_kind() -> None:
    assert kind_of("query") == "query"
    assert kind_of("cdc") == "cdc"
    assert kind_of("batch") == "batch"
    assert kind_of("invoice/42") == "read"
    assert kind_of("companyinfo/9341453908128517") == "read"


@pytest.mark.anyio
async def test_counts_survive_a_new_outbox_and_meter(tmp_path: Path) -> None:
    clock = Clock("2026-12-03T12:00:00")
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox, clock=clock)
        await meter.load()
        for kind in ("cdc", "cdc", "query", "token"):
            meter.count("acme", kind)
        meter.count("globex", "read")
        await meter.flush()
        meter.count("acme", "cdc")  # after the last flush; the close flush below keeps it
        await meter.flush(durable=True)
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        again = CallMeter(outbox, clock=clock)
        await again.load()
        assert again.instance_stats("acme") == {
            "month": "2026-12",
            "by_kind": {"cdc": 3, "query": 1, "token": 1},
            "total": 5,
        }
        assert again.total() == 6
        again.count("acme", "cdc")
        assert again.by_kind("acme")["cdc"] == 4


@pytest.mark.anyio
async def test_a_new_month_starts_from_zero_and_keeps_the_old_rows(tmp_path: Path) -> None:
    clock = Clock("2026-11-30T23:59:58")
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox, clock=clock)
        await meter.load()
        meter.count("acme", "cdc")
        meter.count("acme", "cdc")
        clock.now = at("2026-12-01T00:00:01")
        assert meter.total() == 0
        meter.count("acme", "query")
        await meter.flush()
        assert meter.stats()["month"] == "2026-12"
        assert await outbox.load_api_calls("2026-11") == {("acme", "cdc"): 2}
        assert await outbox.load_api_calls("2026-12") == {("acme", "query"): 1}
        # A meter started in December does not bring November's counts back.
        fresh = CallMeter(outbox, clock=clock)
        await fresh.load()
        assert fresh.by_kind() == {"query": 1}


@pytest.mark.anyio
async def test_rows_older_than_thirteen_months_are_pruned(tmp_path: Path) -> None:
    clock = Clock("2025-10-15T00:00:00")
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox, clock=clock)
        meter.count("acme", "cdc")
        await meter.flush()
        clock.now = at("2025-11-15T00:00:00")
        meter.count("acme", "cdc")
        await meter.flush()
        clock.now = at("2026-11-15T00:00:00")
        meter.count("acme", "cdc")
        await meter.flush()
        assert await outbox.load_api_calls("2025-10") == {}
        assert await outbox.load_api_calls("2025-11") == {("acme", "cdc"): 1}


@pytest.mark.anyio
async def test_the_projection_is_logged_once_a_utc_day(tmp_path: Path) -> None:
    clock = Clock("2026-12-03T10:00:00")
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox, clock=clock)
        assert meter.log_daily()
        clock.now = at("2026-12-03T23:59:59")
        assert not meter.log_daily()
        clock.now = at("2026-12-04T00:00:00")
        assert meter.log_daily()


@pytest.mark.anyio
async def test_the_client_and_token_manager_count_every_request_by_kind(
    qbo, make_manager, tmp_path: Path
) -> None:
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox)
        q = await qbo(client={"count_call": meter.count, "throttle_wait": 0.05})
        tokens = make_manager(q.sandbox, count_call=meter.count)
        found = await q.client.query(q.realm, tokens, ONE)
        customer = found["QueryResponse"]["Customer"][0]["Id"]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        await q.client.cdc(q.realm, tokens, ["Customer"], since)
        await q.client.read(q.realm, tokens, "Customer", customer)
        # A throttled request that is tried again is metered twice, as Intuit meters it.
        q.sandbox.set_faults(throttle=1)
        await q.client.query(q.realm, tokens, ONE)
        assert meter.by_kind("acme") == {"cdc": 1, "query": 3, "read": 1, "token": 1}
        assert sum(q.sandbox.stats()["requests"].values()) == meter.total()


@pytest.mark.anyio
async def test_run_saves_at_stop_and_keeps_counts_a_failed_flush_could_not_save(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", durability="normal")
    await outbox.open()
    meter = CallMeter(outbox)
    meter.count("acme", "cdc")
    await outbox.close()
    with pytest.raises(OutboxError):
        await meter.flush()
    await outbox.open()
    meter.count("acme", "query")
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(meter.run(stop))
        stop.set()
    assert await outbox.load_api_calls(meter.month) == {("acme", "cdc"): 1, ("acme", "query"): 1}
    await outbox.close()
