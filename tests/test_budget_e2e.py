"""quickbooks.monthly_call_budget end to end: hybrid polls stretch first, and the month's count
never passes the budget, with the daemon as a subprocess against the sandbox."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from qbo_events import config as config_module
from qbo_events.app import outbox_path
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.budget import SPEND_SHARE, rates, seconds_left_in_month
from qbo_events.quickbooks.meter import METERED, month_of
from test_polling_e2e import polling_instance

HYBRID_REALM, POLLING_REALM = "9341453908128517", "4620816365178297"
URLS = '"customers|invoices"'
INTERVAL = 0.05  # minutes: 3 s


def metered_calls(sandbox: SandboxProcess, realm: str) -> int:
    kinds = sandbox.stats()["calls_by_realm"].get(realm, {})
    return sum(count for kind, count in kinds.items() if kind in METERED)


def seed_month(d: DaemonProcess, count: int) -> None:
    """Calls counted by an earlier run this month, stored as the daemon stores them."""

    async def store() -> None:
        config = config_module.load(d.config_path)
        async with Outbox(outbox_path(config)) as outbox:
            row = (month_of(time.time()), "earlier", "cdc", count)
            await outbox.save_api_calls([row], prune_before="0000-00", durable=True)

    asyncio.run(store())


def stretch_metric(d: DaemonProcess, mode: str) -> float:
    metrics = d.health("/metrics")[1]
    match = re.search(
        rf'^qbo_events_poll_interval_stretch\{{mode="{mode}"\}} (\S+)$', metrics, re.M
    )
    assert match, "the stretch gauge is missing"
    return float(match[1])


def test_hybrid_stretches_first_and_the_budget_is_never_passed(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(HYBRID_REALM, POLLING_REALM))
    instances = polling_instance(
        sandbox, "hy", receiver.url, URLS, realm=HYBRID_REALM, vendor="hybrid", interval=INTERVAL
    ) + polling_instance(sandbox, "po", receiver.url, URLS, realm=POLLING_REALM, interval=INTERVAL)
    settings = sandbox.quickbooks_settings()
    d = daemon_factory(instances, settings=settings)
    hybrid_rate, polling_rate = rates(config_module.load(d.config_path).instances)
    assert hybrid_rate == polling_rate > 0
    # A budget whose rest holds the polling-only polls and half the hybrid ones this month.
    budget = 10**9
    rest = round((polling_rate + hybrid_rate / 2) * seconds_left_in_month(time.time()))
    used = budget - round(rest / SPEND_SHARE)
    d.write_config(instances, settings=settings + f"monthly_call_budget = {budget}\n")
    seed_month(d, used)
    d.start()

    shown = d.health("/status")[1]
    plan = shown["quickbooks"]["budget"]
    assert plan["monthly_call_budget"] == budget and plan["stretched"]
    assert abs(plan["stretch"]["hybrid"] - 2.0) < 0.1 and plan["stretch"]["polling"] == 1.0
    assert abs(shown["instances"]["hy"]["poll_stretch"] - 2.0) < 0.1
    assert "poll_stretch" not in shown["instances"]["po"]
    assert abs(stretch_metric(d, "hybrid") - 2.0) < 0.1 and stretch_metric(d, "polling") == 1.0
    assert '"quickbooks.budget_stretch"' in d.stderr()
    table = subprocess.run(
        [sys.executable, "-m", "qbo_events", "status", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert table.returncode == 0, table.stderr
    assert re.search(
        r"^budget 1000000000: \d+ used; poll intervals stretched \(hybrid x", table.stdout, re.M
    )

    # The hybrid company is polled at half the rate of the polling-only one.
    start = {realm: metered_calls(sandbox, realm) for realm in (HYBRID_REALM, POLLING_REALM)}
    wait_for(
        lambda: metered_calls(sandbox, POLLING_REALM) >= start[POLLING_REALM] + 5,
        timeout=60,
        what="five polls of the polling-only company",
    )
    polled = metered_calls(sandbox, POLLING_REALM) - start[POLLING_REALM]
    hybrid_polled = metered_calls(sandbox, HYBRID_REALM) - start[HYBRID_REALM]
    assert 1 <= hybrid_polled <= polled // 2 + 1, (hybrid_polled, polled)

    # A budget with a handful of calls left: polling stops short of it, and stays within it.
    now = d.health("/status")[1]["quickbooks"]["budget"]["used"]
    tight = now + 3
    d.write_config(instances, settings=settings + f"monthly_call_budget = {tight}\n")
    d.signal(signal.SIGHUP)

    def held_back() -> bool:
        stretch = d.health("/status")[1]["quickbooks"]["budget"]["stretch"]
        # Three calls spread over the rest of the month: days between polls, or none at all.
        return all(f == "paused" or f > 1000 for f in stretch.values())

    wait_for(held_back, what="polling to all but stop for the rest of the month")
    assert stretch_metric(d, "polling") > 1000 and stretch_metric(d, "hybrid") > 1000
    paused_at = sum(metered_calls(sandbox, realm) for realm in (HYBRID_REALM, POLLING_REALM))
    # Three configured intervals go by: a loop that still polled would show in the sandbox.
    until = time.monotonic() + 9
    wait_for(lambda: time.monotonic() > until, timeout=15, what="three intervals to pass")
    after = sum(metered_calls(sandbox, realm) for realm in (HYBRID_REALM, POLLING_REALM))
    assert after - paused_at <= 3
    assert d.health("/status")[1]["quickbooks"]["budget"]["used"] <= tight
    # Webhooks still flow while polling waits: the hybrid instance loses nothing it is sent.
    assert d.health("/readyz")[0] == 200
    assert d.stop() == 0
