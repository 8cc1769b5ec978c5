"""Coalesced polling end to end: one CDC request per company per cycle, by the sandbox's log."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from test_polling_e2e import (
    REALM,
    delivered,
    duplicates,
    expected,
    polling_instance,
    wait_delivered,
    wait_first_polls,
    wait_next_polls,
)

INTERVAL = 3.0  # seconds: refresh_interval = 0.05 minutes


def calls_after(sandbox: SandboxProcess, seq: int) -> list[dict[str, Any]]:
    """The QuickBooks calls the sandbox answered for REALM after call `seq`, oldest first."""
    answer = sandbox.control("GET", f"/_sandbox/calls?after={seq}&realm_id={REALM}")
    return list(answer["calls"])


def last_seq(sandbox: SandboxProcess) -> int:
    calls = calls_after(sandbox, 0)
    return int(calls[-1]["seq"]) if calls else 0


def at(call: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(call["at"].replace("Z", "+00:00")).timestamp()


def test_all_22_resources_cost_at_most_4_calls_a_cycle(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, "[]", interval=INTERVAL / 60),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 22)
    wait_next_polls(d, "acme")
    began, seq = time.time(), last_seq(sandbox)

    # A change of a CDC resource, of a Query-only one, and a delete, made between polls.
    changes = sandbox.change("Invoice", "Create", 1)
    activities = sandbox.change("TimeActivity", "Create", 1)
    deleted = sandbox.change("Invoice", "Delete", 1, id="2")
    want = (
        expected(changes, "invoices")
        | expected(deleted, "invoices")
        | expected(activities, "time-activities")
    )
    wait_delivered(receiver, want, 30, "the three changes")
    for _ in range(4):
        wait_next_polls(d, "acme", timeout=30)
    ended = time.time()
    calls = [c for c in calls_after(sandbox, seq) if at(c) <= ended]

    cycles = (ended - began) / INTERVAL
    assert cycles >= 3
    kinds = Counter(c["kind"] for c in calls)
    # 19 CDC entities in one request, and one Query each for tax codes, tax rates and time
    # activities: 4 a cycle (one window may hold the tail of one cycle and the head of the next).
    assert len(calls) <= 4 * (cycles + 1), (len(calls), cycles, kinds)
    assert kinds["cdc"] <= cycles + 1, (kinds, cycles)
    per_window = Counter(int((at(c) - began) // INTERVAL) for c in calls)
    assert max(per_window.values()) <= 22, per_window
    assert all(c["status"] == 200 for c in calls), calls

    assert delivered(receiver) == want
    assert receiver.count() == len(want) == 3
    assert duplicates(receiver) == 0
    assert receiver.bad_signatures == 0
    resources = d.health("/status")[1]["instances"]["acme"]["resources"]
    assert all(loop["last_error"] is None for loop in resources.values())
    assert d.stop() == 0


def test_burst_beyond_the_cap_across_a_shared_cdc_answer_is_delivered_exactly_once(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    urls = '["invoices", "customers", "bills", "vendors"]'
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, urls, interval=0.1),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 4)
    # 1,500 changes over three entities, well inside one 6 s interval: the shared answer holds
    # 1,000 of them, so each loop reads its own entity again, and invoices, at the cap on its
    # own too, completes its window with paged Query.
    started = time.monotonic()
    changes = {
        "invoices": sandbox.change("Invoice", "Create", 1100),
        "customers": sandbox.change("Customer", "Create", 250),
        "bills": sandbox.change("Bill", "Create", 150),
    }
    assert time.monotonic() - started < 2.5, "the burst must fit well inside one poll interval"
    want = set().union(*(expected(made, name) for name, made in changes.items()))
    assert len(want) == 1500
    wait_delivered(receiver, want, 60, "1,500 deliveries")
    assert delivered(receiver) == want
    assert "shared CDC answer at its cap" in d.stderr()
    # A later poll re-reads the overlap; nothing is delivered twice.
    wait_next_polls(d, "acme", timeout=30)
    wait_for(lambda: receiver.count() >= 1500, 10, "the deliveries counted")
    assert receiver.count() == 1500
    assert duplicates(receiver) == 0
    assert receiver.bad_signatures == 0
    resources = d.health("/status")[1]["instances"]["acme"]["resources"]
    assert all(loop["last_error"] is None for loop in resources.values())
    assert d.stop() == 0
