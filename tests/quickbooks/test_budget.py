"""The monthly call budget: the plan's stretching order, the keeper at a month's turn, the gate."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from qbo_events import config as config_module
from qbo_events.config import Config
from qbo_events.errors import BudgetExhausted
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.budget import (
    HYBRID_MAX_STRETCH,
    SPEND_SHARE,
    BudgetKeeper,
    Stretch,
    plan,
    rates,
    seconds_left_in_month,
)
from qbo_events.quickbooks.meter import CallMeter

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


def config(budget: int, *modes: str) -> Config:
    text = (
        '[quickbooks]\nclient_id = "c"\nclient_secret = "s"\nwebhook_verifier_token = "v"\n'
        f"monthly_call_budget = {budget}\n"
    )
    for index, mode in enumerate(modes):
        text += (
            f'[[instances]]\nname = "i{index}"\nrealm_id = "{index + 1}"\n'
            f'refresh_token = "r"\nevent.vendor.type = "{mode}"\n'
            'event.notification.callback.url = "http://127.0.0.1:1/"\n'
            "event.poller.refresh_interval = 15\n"
            'event.poller.urls = "customers|invoices"\n'
        )
    return config_module.loads(text, environ={})


def test_seconds_left_run_to_the_next_utc_month() -> None:
    assert seconds_left_in_month(at("2026-11-30T23:00:00")) == 3600
    assert seconds_left_in_month(at("2026-12-01T00:00:00")) == 31 * 86400
    assert seconds_left_in_month(at("2028-02-29T00:00:00")) == 86400


def test_no_budget_or_room_enough_stretches_nothing() -> None:
    free = plan(budget=0, used=10**9, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert free == Stretch(1.0, 1.0)
    # 10 calls/s planned, 0.9 * 2000 / 100 = 18 allowed.
    roomy = plan(budget=2000, used=0, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert roomy == Stretch(1.0, 1.0)


def test_hybrid_instances_stretch_first() -> None:
    # Allowed: 0.9 * 1000 / 100 = 9 calls/s; polling 5 stays, hybrid 5 must fit in 4.
    got = plan(budget=1000, used=0, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert got.polling == 1.0
    assert got.hybrid == pytest.approx(5 / 4)
    assert 5 / got.hybrid + 5 / got.polling == pytest.approx(SPEND_SHARE * 1000 / 100)


def test_polling_only_instances_stretch_once_hybrid_ones_are_at_their_cap() -> None:
    # Allowed 0.9 calls/s: hybrid at its cap costs 5/96; polling must fit in the rest.
    got = plan(budget=100, used=0, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert got.hybrid == HYBRID_MAX_STRETCH
    assert 1.0 < got.polling <= HYBRID_MAX_STRETCH
    assert 5 / got.hybrid + 5 / got.polling == pytest.approx(0.9)


def test_beyond_both_caps_everything_stretches_alike_and_nothing_left_pauses() -> None:
    got = plan(budget=10, used=0, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert got.hybrid == got.polling > HYBRID_MAX_STRETCH
    assert 10 / got.hybrid == pytest.approx(0.09)
    spent = plan(budget=10, used=10, seconds_left=100, hybrid_rate=5, polling_rate=5)
    assert math.isinf(spent.hybrid) and math.isinf(spent.polling)
    # A group with no instances is never reported as stretched.
    only_polling = plan(budget=10, used=10, seconds_left=100, hybrid_rate=0, polling_rate=5)
    assert only_polling.hybrid == 1.0 and math.isinf(only_polling.polling)


def test_rates_leave_webhook_only_instances_out() -> None:
    hybrid, polling = rates(config(0, "hybrid", "polling", "webhooks").instances)
    # Two CDC resources at 15 minutes share one call: 1/900 a second each.
    assert hybrid == pytest.approx(1 / 900)
    assert polling == pytest.approx(1 / 900)
    assert rates(config(0, "webhooks").instances) == (0.0, 0.0)


@pytest.mark.anyio
async def test_the_keeper_stretches_near_the_budget_and_lets_go_when_the_month_turns(
    tmp_path: Path,
) -> None:
    clock = Clock("2026-11-20T00:00:00")
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox, clock=clock)
        applied: list[Stretch] = []
        keeper = BudgetKeeper(meter, applied.append, clock=clock)
        hybrid_rate, polling_rate = rates(config(0, "hybrid", "polling").instances)
        # A budget that a whole month at the configured intervals fits, with a fifth to spare.
        budget = round((hybrid_rate + polling_rate) * 31 * 86400 * 1.2 / SPEND_SHARE)
        keeper.configure(config(budget, "hybrid", "polling", "webhooks"))
        assert keeper.replan() == Stretch(1.0, 1.0) and applied == []
        # Spent so far that what is left holds the polling-only polls and half the hybrid ones.
        left = seconds_left_in_month(clock.now)
        used = budget - round((polling_rate + hybrid_rate / 2) * left / SPEND_SHARE)
        for _ in range(used):
            meter.count("i0", "cdc")
        # Tokens are not metered: they leave the plan alone.
        for _ in range(budget):
            meter.count("i0", "token")
        stretch = keeper.replan()
        assert stretch.polling == 1.0
        assert stretch.hybrid == pytest.approx(2.0, rel=0.01)
        assert applied == [stretch]
        assert keeper.stats()["stretched"] and keeper.stats()["since"] == "2026-11-20T00:00:00Z"
        for _ in range(budget - used):
            meter.count("i1", "query")
        assert math.isinf(keeper.replan().hybrid)
        assert keeper.stats()["stretch"] == {"hybrid": "paused", "polling": "paused"}
        clock.now = at("2026-12-01T00:00:00")
        assert keeper.replan() == Stretch(1.0, 1.0)
        assert applied[-1] == Stretch(1.0, 1.0)
        assert keeper.stats()["since"] is None and keeper.stats()["used"] == 0


@pytest.mark.anyio
async def test_the_meter_refuses_metered_calls_at_the_budget(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox)
        meter.budget = 3
        for kind in ("cdc", "query"):
            meter.count("a", kind)
        assert meter.admits("read")
        meter.count("a", "read")
        assert not meter.admits("cdc") and not meter.admits("batch")
        assert meter.admits("token")
        await meter.flush()
        again = CallMeter(outbox)
        await again.load()
        again.budget = 3
        assert again.metered_total() == 3 and not again.admits("query")


@pytest.mark.anyio
async def test_the_client_sends_nothing_past_the_budget(qbo, make_manager, tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite3", durability="normal") as outbox:
        meter = CallMeter(outbox)
        meter.budget = 2
        q = await qbo(client={"count_call": meter.count, "admit": meter.admits})
        tokens = make_manager(q.sandbox, count_call=meter.count)
        await q.client.query(q.realm, tokens, ONE)
        await q.client.query(q.realm, tokens, ONE)
        before = q.sandbox.stats()["calls"]
        with pytest.raises(BudgetExhausted):
            await q.client.query(q.realm, tokens, ONE)
        assert q.sandbox.stats()["calls"] == before
        assert meter.metered_total() == 2
        assert q.client.stats()["calls"]["budget"] == 1
