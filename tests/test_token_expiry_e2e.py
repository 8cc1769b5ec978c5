"""The refresh token's hard expiry: asked for on every refresh, shown in /status, `status` and
/metrics, and an `expiring` connection event once a UTC day inside the warning window."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from qbo_events.connect.expiry import DAY, due
from test_polling_e2e import polling_instance

HARD = 10 * 86400  # ten days left: inside the default 30-day window


def expiring(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        d["body"]["message"]["events"][0]
        for d in list(receiver.deliveries)
        if d["body"]["message"]["events"][0].get("status") == "expiring"
    ]


def test_due_warns_inside_the_window_once_a_day() -> None:
    now = 1_800_000_000.0  # 2027-01-15
    expiries = {"soon": now + 5 * DAY, "later": now + 40 * DAY, "unknown": 0.0}
    assert due(now, expiries, 30, {}) == {"soon": 5.0}
    assert due(now, expiries, 30, {"soon": "2027-01-15"}) == {}
    assert due(now + DAY, expiries, 30, {"soon": "2027-01-15"}) == {"soon": 4.0}
    assert due(now, {"gone": now - DAY}, 30, {}) == {"gone": 0.0}


def test_a_near_hard_expiry_is_shown_and_announced_once_a_day(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(options=("--refresh-hard-expiry", str(HARD)))
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.02),
        settings=sandbox.quickbooks_settings(),
    ).start()
    (event,) = wait_for(lambda: expiring(receiver), 30, "the expiring event")
    assert event["eventType"] == "CONNECTION" and event["realmId"] == sandbox.realms[0]
    tokens = d.health("/status")[1]["instances"]["acme"]["tokens"]
    assert 9.9 <= tokens["refresh_token_days_left"] <= 10.0
    metrics = d.health("/metrics")[1]
    seconds = re.search(
        r'^qbo_events_refresh_token_expiry_seconds\{instance="acme"\} (\S+)$', metrics, re.M
    )
    assert seconds and HARD - 120 <= float(seconds[1]) <= HARD
    assert '"quickbooks.refresh_token_expiring"' in d.stderr()
    shown = subprocess.run(
        [sys.executable, "-m", "qbo_events", "status", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert re.search(r"^acme: refresh token valid \d+(\.\d)? more days", shown.stdout, re.M)

    # The watch goes on every two seconds; a restart forgets whom it warned. Still one a day.
    polls = d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]["last_poll_at"]
    wait_for(
        lambda: (
            d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]["last_poll_at"]
            != polls
        ),
        what="another poll",
    )
    assert d.stop() == 0
    d.start()
    wait_for(lambda: d.stderr().count('"quickbooks.refresh_token_expiring"') == 2, 30, "a warning")
    made = sandbox.change("Invoice", "Create", 1)
    wait_for(
        lambda: any(
            d["body"]["message"]["events"][0].get("objectId") == made[0]["object_id"]
            for d in list(receiver.deliveries)
        ),
        30,
        "a change delivered after the restart",
    )
    assert len(expiring(receiver)) == 1
    assert d.stop() == 0
