"""Polling end to end: the sandbox changes objects, the daemon polls and delivers the events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness import DaemonProcess, Receiver, SandboxProcess, instance_toml, wait_for

REALM = "9341453908128517"


def polling_instance(
    sandbox: SandboxProcess,
    name: str,
    url: str,
    urls: str,
    realm: str = REALM,
    vendor: str = "polling",
    interval: float = 0.02,
) -> str:
    return instance_toml(
        name, realm, url, vendor=vendor,
        extra=(
            f'refresh_token = "{sandbox.realm_refresh_token(realm)}"\n'
            f"event.poller.refresh_interval = {interval}\n"
            f"event.poller.urls = {urls}\n"
            "event.poller.overlap = 5\n"
        ),
    )  # fmt: skip


def wait_first_polls(d: DaemonProcess, instance: str, count: int) -> None:
    def polled() -> bool:
        loops = d.health("/status")[1]["instances"][instance]["resources"]
        return len(loops) == count and all(r["last_success_at"] for r in loops.values())

    wait_for(polled, what=f"a first poll of {count} resources")


def delivered(receiver: Receiver) -> set[tuple[str, str, str, str]]:
    return {(e["objectType"], e["objectId"], e["eventType"], e["date"]) for e in receiver.events()}


def expected(changes: list[dict[str, str]], object_type: str) -> set[tuple[str, str, str, str]]:
    return {(object_type, c["object_id"], c["event_type"], c["last_updated"]) for c in changes}


def test_creates_updates_deletes_of_invoices_and_time_activities(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices", "time-activities"]'),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 2)
    # Polling sees each object's latest state, so each step waits for its events before the
    # next step changes the same objects again.
    invoices = sandbox.change("Invoice", "Create", 3)
    activities = sandbox.change("TimeActivity", "Create", 2)
    want = expected(invoices, "invoices") | expected(activities, "time-activities")
    wait_for(lambda: want <= delivered(receiver), timeout=30, what="the creates")
    first, second = invoices[0]["object_id"], invoices[1]["object_id"]
    invoices = sandbox.change("Invoice", "Update", 1, id=first)
    invoices += sandbox.change("Invoice", "Delete", 1, id=second)
    activities = sandbox.change("TimeActivity", "Update", 1, id=activities[0]["object_id"])
    want = expected(invoices, "invoices") | expected(activities, "time-activities")
    wait_for(lambda: want <= delivered(receiver), timeout=30, what="the updates and delete")
    kinds = {(t, k) for t, _, k, _ in delivered(receiver)}
    assert {("invoices", "CREATED"), ("invoices", "UPDATED"), ("invoices", "DELETED")} <= kinds
    assert {("time-activities", "CREATED"), ("time-activities", "UPDATED")} <= kinds
    assert receiver.bad_signatures == 0
    assert len(receiver.ids()) == len(set(receiver.ids()))
    assert receiver.deliveries[0]["body"]["message"]["source"] == "polling"
    assert d.stop() == 0


# -- helpers for the tests below ------------------------------------------------------------------


def loops(d: DaemonProcess, instance: str) -> dict[str, Any]:
    return dict(d.health("/status")[1]["instances"][instance]["resources"])


def wait_next_polls(d: DaemonProcess, instance: str, timeout: float = 20.0) -> None:
    """Until every loop of `instance` has finished a poll that started after this call."""
    marks = {name: loop["last_poll_at"] for name, loop in loops(d, instance).items()}

    def polled() -> bool:
        now = loops(d, instance)
        return all(
            (loop["last_poll_at"] or "") > (marks[name] or "")
            and (loop["last_success_at"] or "") >= (loop["last_poll_at"] or "~")
            for name, loop in now.items()
        )

    wait_for(polled, timeout, f"a further poll of every resource of {instance}")


def duplicates(receiver: Receiver) -> int:
    ids = receiver.ids()
    return len(ids) - len(set(ids))


def api_calls(sandbox: SandboxProcess, route: str) -> int:
    """Calls the sandbox answered on one route (`cdc`, `query`, `token`), by any status."""
    requests = sandbox.stats()["requests"]
    return sum(n for key, n in requests.items() if key.rpartition(" ")[0] == route)


# -- a burst beyond CDC's cap ---------------------------------------------------------------------


def test_burst_beyond_the_cdc_cap_is_delivered_exactly_once(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.1),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 1)
    cdc_before, query_before = api_calls(sandbox, "cdc"), api_calls(sandbox, "query")
    # The whole burst lands well inside the 6 s interval, so one poll meets all of it: CDC
    # answers 1,000 of the 2,503 and the poller has to complete the window with paged Query.
    began = time.monotonic()
    changes = sandbox.change("Invoice", "Create", 2500)
    for seeded in ("1", "2", "3"):
        changes += sandbox.change("Invoice", "Update", 1, id=seeded)
    assert time.monotonic() - began < 2.0, "the burst must fit well inside one poll interval"
    assert len({c["object_id"] for c in changes}) == 2503

    want = expected(changes, "invoices")
    wait_for(lambda: receiver.count() >= len(want), timeout=30, what="2,503 deliveries")
    assert delivered(receiver) == want
    # The burst was read by one CDC call at its cap, completed by at least three Query pages.
    assert api_calls(sandbox, "cdc") - cdc_before >= 1
    assert api_calls(sandbox, "query") - query_before >= 3
    # A later poll re-reads the overlap; nothing is delivered twice.
    wait_next_polls(d, "acme")
    assert receiver.count() == len(want) == 2503
    assert duplicates(receiver) == 0
    assert receiver.bad_signatures == 0
    assert loops(d, "acme")["invoices"]["last_error"] is None
    assert d.stop() == 0
