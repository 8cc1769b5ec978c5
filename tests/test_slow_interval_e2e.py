"""event.poller.slow_interval end to end: the daemon polls a slow list less often, and a reload
that turns it off speeds that list's running loop up at once."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

from harness import DaemonProcess, Receiver, SandboxProcess, instance_toml, wait_for

REALM = "9341453908128517"
FAST_MINUTES = 0.02  # 1.2 s
SLOW_MINUTES = 0.5  # 30 s
POLLS = re.compile(r'^qbo_events_poll_duration_seconds_count\{resource="([a-z-]+)"\} (\d+)', re.M)


def instance(sandbox: SandboxProcess, url: str, slow: float) -> str:
    return instance_toml(
        "acme", REALM, url, vendor="polling",
        extra=(
            f'refresh_token = "{sandbox.realm_refresh_token(REALM)}"\n'
            f"event.poller.refresh_interval = {FAST_MINUTES}\n"
            f"event.poller.slow_interval = {slow}\n"
            'event.poller.urls = ["invoices", "currencies"]\n'
        ),
    )  # fmt: skip


def polls(d: DaemonProcess) -> dict[str, int]:
    """Polls finished so far, per resource, as the daemon's metrics count them."""
    return {name: int(count) for name, count in POLLS.findall(d.health("/metrics")[1])}


def test_a_slow_list_is_polled_less_often_until_a_reload_turns_slow_interval_off(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    settings = sandbox.quickbooks_settings()
    d = daemon_factory(instance(sandbox, receiver.url, SLOW_MINUTES), settings=settings).start()
    # Both loops have polled once: the first polls are spread over each loop's own interval.
    wait_for(
        lambda: set(polls(d)) == {"invoices", "currencies"}, timeout=60, what="a first poll of each"
    )
    start = polls(d)
    wait_for(
        lambda: polls(d)["invoices"] - start["invoices"] >= 8,
        timeout=60,
        what="eight more polls of invoices",
    )
    now = polls(d)
    # Eight polls of invoices take at least 8.4 s (7 intervals of 1.2 s); currencies, at 30 s,
    # could poll twice only if those eight took 30 s or more, three times only past 60 s.
    assert now["currencies"] - start["currencies"] <= 2, (start, now)
    assert now["invoices"] - start["invoices"] >= 4 * (now["currencies"] - start["currencies"])

    # Off: currencies falls back to the refresh interval, and its wait under way is re-timed
    # (four polls within 25 s is impossible at the slow interval).
    d.write_config(instance(sandbox, receiver.url, 0), settings=settings)
    d.signal(signal.SIGHUP)
    before = polls(d)["currencies"]
    wait_for(
        lambda: polls(d)["currencies"] - before >= 4,
        timeout=25,
        what="currencies polled at the refresh interval after the reload",
    )
    assert "slow_interval" not in d.stderr()
    assert d.stop() == 0
