"""Polling end to end: the sandbox changes objects, the daemon polls and delivers the events."""

from __future__ import annotations

from collections.abc import Callable

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
