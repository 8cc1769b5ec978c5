"""Hybrid mode end to end: the sandbox posts its webhooks to the daemon, which also polls it;
every change is delivered once, from whichever source saw it first."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from test_polling_e2e import (
    delivered,
    duplicates,
    expected,
    polling_instance,
    wait_delivered,
    wait_first_polls,
    wait_next_polls,
)

RESOURCES = {"Invoice": "invoices", "Customer": "customers"}


def counter(metrics: str, kind: str, source: str) -> float:
    """qbo_events_events_{accepted,duplicate}_total for one source."""
    line = rf'^qbo_events_events_{kind}_total{{source="{source}"}} (\S+)$'
    found = re.search(line, metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("webhook_format", ["legacy", "cloudevents"])
def test_hybrid_delivers_every_change_once(
    webhook_format: str,
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    # The daemon's ports are chosen at construction, the sandbox needs its webhook URL, and the
    # daemon's config needs the sandbox's address: construct, then configure, then start.
    d = daemon_factory("")
    sandbox = sandbox_factory(webhook_url=d.webhook_url, webhook_format=webhook_format)
    d.write_config(
        polling_instance(
            sandbox, "acme", receiver.url, '["invoices", "customers"]', vendor="hybrid",
            interval=0.05,
        ),
        settings=sandbox.quickbooks_settings(),
    )  # fmt: skip
    d.start()
    wait_first_polls(d, "acme", 2)

    made: list[dict[str, Any]] = []

    def step(*changes: tuple[str, str, str | None]) -> None:
        """Make changes, then wait for their events: polling sees only an object's latest
        state, so each step's state must be observed before the next step changes it again."""
        batch: list[dict[str, Any]] = []
        for entity, operation, object_id in changes:
            extra = {} if object_id is None else {"id": object_id}
            batch += sandbox.change(entity, operation, 1, **extra)
        made.extend(batch)
        want = set().union(*(expected([c], RESOURCES[c["entity"]]) for c in batch))
        wait_delivered(receiver, want, 20, f"the events of {changes}")

    # Webhooks first: they arrive within ~0.2 s, polls come every 3 s.
    step(("Invoice", "Create", None), ("Invoice", "Create", None), ("Customer", "Create", None))
    first, second, customer = (c["object_id"] for c in made)
    step(
        ("Invoice", "Update", first),
        ("Invoice", "Delete", second),
        ("Customer", "Update", customer),
    )
    step(("Invoice", "Emailed", first))
    step(("Invoice", "Void", first), ("Customer", "Merge", customer))
    step(("Customer", "Delete", customer))
    webhook_first = len(made)
    # Polling first: the sandbox holds its webhooks back until polling has delivered everything.
    sandbox.control("POST", "/_sandbox/webhooks/hold", {"hold": True})
    step(("Invoice", "Create", None), ("Customer", "Update", None))
    late_invoice = made[webhook_first]["object_id"]
    step(("Invoice", "Update", late_invoice))
    step(("Invoice", "Emailed", late_invoice))
    sandbox.control("POST", "/_sandbox/webhooks/hold", {"hold": False})

    want = set().union(*(expected([c], RESOURCES[c["entity"]]) for c in made))
    kinds = {(t, k) for t, _, k, _ in want}
    assert {("invoices", "CREATED"), ("invoices", "UPDATED"), ("invoices", "DELETED")} <= kinds
    assert {("customers", "CREATED"), ("customers", "UPDATED"), ("customers", "DELETED")} <= kinds
    # Both sources have seen everything: every webhook acknowledged, and a full poll of each
    # resource run after the last change.
    notifications = sum(1 for c in made if c["webhook"] and not (
        c["operation"] == "Merge" and c["event_type"] == "DELETED"
    ))  # fmt: skip
    wait_for(
        lambda: sandbox.stats()["webhooks"]["events_acked"] == notifications,
        20,
        "the sandbox's webhooks to be acknowledged",
    )
    wait_next_polls(d, "acme")

    assert delivered(receiver) == want
    assert receiver.count() == len(want)
    assert duplicates(receiver) == 0
    assert receiver.bad_signatures == 0
    source = {
        (e["objectType"], e["objectId"], e["eventType"], e["date"]): m["body"]["message"]["source"]
        for m, e in zip(receiver.deliveries, receiver.events(), strict=True)
    }
    early = set().union(*(expected([c], RESOURCES[c["entity"]]) for c in made[:webhook_first]))
    late = want - early
    # A poll may now and then beat a webhook of the first phase; most arrive by webhook.
    early_sources = [source[k] for k in early]
    assert early_sources.count("webhook") > len(early) // 2
    assert {source[k] for k in late} == {"polling"}
    # An emailed invoice is an update; by webhook it keeps QuickBooks' own operation.
    emailed = [c for c in made if c["operation"] == "Emailed"]
    assert len(emailed) == 2 and all(c["event_type"] == "UPDATED" for c in emailed)
    operations = {
        (e["objectType"], e["objectId"], e["eventType"], e["date"]): e.get("operation")
        for e in receiver.events()
    }
    for c in emailed:
        key = ("invoices", c["object_id"], "UPDATED", c["last_updated"])
        assert operations[key] == ("Emailed" if source[key] == "webhook" else None), key
    # Exactly one acceptance per distinct event across the two sources; the later source's
    # finds (same eventId) were dropped as duplicates, in both directions.
    metrics = d.health("/metrics")[1]
    webhook, polling = (
        counter(metrics, "accepted", "webhook"),
        counter(metrics, "accepted", "polling"),
    )
    assert webhook + polling == len(want)
    assert polling >= len(late)
    assert counter(metrics, "duplicate", "webhook") >= len(late)
    assert counter(metrics, "duplicate", "polling") >= 1
    status = d.health("/status")[1]
    assert status["instances"]["acme"]["vendor_type"] == "hybrid"
    assert d.stop() == 0
