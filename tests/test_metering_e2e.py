"""Call metering end to end: the daemon's counts by kind match the sandbox's, across a restart."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from test_polling_e2e import polling_instance

# The sandbox names its routes; these are the ones QuickBooks meters, by our kinds.
ROUTE_KINDS = {"cdc": "cdc", "query": "query", "query-post": "query", "read": "read"}
ROUTE_KINDS |= {"batch": "batch", "token": "token"}


def sandbox_calls(sandbox: SandboxProcess) -> dict[str, int]:
    """What the sandbox received, by kind, whatever it answered."""
    counts: Counter[str] = Counter()
    for key, count in sandbox.stats()["requests"].items():
        route = key.rsplit(" ", 1)[0]
        if route in ROUTE_KINDS:
            counts[ROUTE_KINDS[route]] += count
    return dict(sorted(counts.items()))


def metered(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.health("/status")[1]["instances"]["acme"]["api_calls"])


def agree(d: DaemonProcess, sandbox: SandboxProcess) -> dict[str, int] | None:
    """The counts by kind once the daemon's and the sandbox's are equal (between two polls)."""
    ours = metered(d)["by_kind"]
    return ours if ours == sandbox_calls(sandbox) and {"cdc", "query"} <= set(ours) else None


def metrics_of(d: DaemonProcess) -> dict[str, float]:
    found = {}
    for line in d.health("/metrics")[1].splitlines():
        match = re.match(r'qbo_events_quickbooks_calls_(total\{kind="\w+"\}|month\S*) (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def test_calls_are_counted_by_kind_and_survive_a_restart(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(
            sandbox, "acme", receiver.url, '["invoices", "customers", "time-activities"]',
            interval=0.03,
        ),
        settings=sandbox.quickbooks_settings(),
    ).start()  # fmt: skip

    first = wait_for(lambda: agree(d, sandbox), timeout=60, what="the counts to match the sandbox")
    assert first["token"] >= 1 and first["query"] >= 1 and first["cdc"] >= 1
    status = d.health("/status")[1]
    month = status["quickbooks"]["api_calls"]
    assert month["total"] >= sum(first.values())
    assert month["projection"] >= month["total"]
    assert re.fullmatch(r"\d{4}-\d{2}", month["month"])

    metrics = metrics_of(d)
    for kind in ("cdc", "query", "token"):
        assert metrics[f'total{{kind="{kind}"}}'] >= first[kind]
    assert metrics["month"] >= sum(first.values())
    assert metrics["month_projected"] >= metrics["month"]

    shown = subprocess.run(
        [sys.executable, "-m", "qbo_events", "status", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^quickbooks calls {month['month']}: \d+, projected \d+", shown.stdout, re.M)
    assert re.search(r"^  acme: \d+ \(cdc \d+, query \d+, .*token \d+\)$", shown.stdout, re.M)

    # The day's projection, logged once (a JSON line).
    wait_for(lambda: '"quickbooks.calls_month"' in d.stderr(), what="the projection in the log")
    line = next(x for x in d.stderr().splitlines() if '"quickbooks.calls_month"' in x)
    assert '"projection"' in line
    assert d.stop() == 0
    before = sandbox_calls(sandbox)  # every call of the first run, the last ones included
    d.start()
    # Right after the restart the month goes on from the first run's count, not from zero.
    assert sum(metered(d)["by_kind"].values()) >= sum(before.values())

    def continued() -> dict[str, int] | None:
        now = agree(d, sandbox)
        return now if now is not None and now["cdc"] > before["cdc"] else None

    after = wait_for(continued, timeout=60, what="the counts to go on from the first run's")
    assert all(after[kind] >= count for kind, count in before.items())
    assert metrics_of(d)["month"] >= sum(after.values())
    assert d.stop() == 0
