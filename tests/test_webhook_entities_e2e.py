"""End to end: new webhook entities, Void, Emailed and mixed companies: routed, never refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47.657Z"


def cloudevent(type_: str, entity_id: str, realm: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"ce-{realm}-{entity_id}",
        "source": "intuit.test",
        "type": type_,
        "datacontenttype": "application/json",
        "time": AT,
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
    }


# (instance, object id) -> (entity, objectType, eventType, operation)
EXPECTED = {
    **{
        ("all", i): fields
        for i, fields in {
            "1": ("ChangeOrder", "change-orders", "CREATED", "Create"),
            "2": ("CompanyCurrency", "currencies", "UPDATED", "Update"),
            "3": ("Invoice", "invoices", "UPDATED", "Void"),
            "4": ("Invoice", "invoices", "UPDATED", "Void"),
            "5": ("Invoice", "invoices", "UPDATED", "Emailed"),
            "6": ("Estimate", "estimates", "UPDATED", "Emailed"),
            "8": ("Invoice", "invoices", "UPDATED", "Void"),
            "9": ("Estimate", "estimates", "UPDATED", "Emailed"),
        }.items()
    },
    ("inv", "2"): ("CompanyCurrency", "currencies", "UPDATED", "Update"),
    ("inv", "3"): ("Invoice", "invoices", "UPDATED", "Void"),
    ("inv", "4"): ("Invoice", "invoices", "UPDATED", "Void"),
    ("inv", "5"): ("Invoice", "invoices", "UPDATED", "Emailed"),
    ("inv", "8"): ("Invoice", "invoices", "UPDATED", "Void"),
    ("inv333", "13"): ("Invoice", "invoices", "UPDATED", "Void"),
}


def test_new_entities_and_operations_are_delivered_and_counted(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    instances = (
        instance_toml("all", "111", receiver.url)
        + instance_toml(
            "inv", "111", receiver.url, extra='event.poller.urls = "invoices|currencies"'
        )
        + instance_toml("inv333", "333", receiver.url, extra='event.poller.urls = "invoices"')
    )
    d = daemon_factory(instances).start()
    cloudevents = [
        cloudevent("qbo.changeorder.created.v1", "1", "111"),
        cloudevent("qbo.companycurrency.updated.v1", "2", "111"),
        cloudevent("qbo.invoice.voided.v1", "3", "111"),
        cloudevent("qbo.invoice.void.v1", "4", "111"),
        cloudevent("qbo.invoice.emailed.v1", "5", "111"),
        cloudevent("qbo.estimate.emailed.v1", "6", "111"),
        cloudevent("qbo.invoice.created.v1", "7", "222"),  # a company nobody serves
        cloudevent("qbo.changeorder.created.v1", "11", "333"),  # served, not subscribed
        cloudevent("qbo.estimate.emailed.v1", "12", "333"),  # served, not subscribed
        cloudevent("qbo.invoice.void.v1", "13", "333"),
    ]
    # CloudEvents may come with their own media type; that must not be refused either.
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    assert d.post(orjson.dumps(cloudevents), **batch) == 200
    legacy = legacy_body("111", ("Invoice", "8", "Void", AT), ("Estimate", "9", "Emailed", AT))
    assert d.post(legacy) == 200

    wait_for(lambda: receiver.count() >= len(EXPECTED), what=f"{len(EXPECTED)} deliveries")
    status = d.health("/status")[1]["webhooks"]
    assert receiver.bad_signatures == 0
    messages = [delivery["body"]["message"] for delivery in receiver.deliveries]
    got = {
        (m["instanceId"], m["events"][0]["objectId"]): (
            m["events"][0]["entity"],
            m["events"][0]["objectType"],
            m["events"][0]["eventType"],
            m["events"][0]["operation"],
        )
        for m in messages
    }
    assert got == EXPECTED
    assert len(messages) == len(EXPECTED)  # each once
    for m in messages:
        assert m["source"] == "webhook"
        assert m["realmId"] == ("333" if m["instanceId"] == "inv333" else "111")
        assert m["events"][0]["date"] == "2026-11-27T13:04:47Z"
        if "type" in m["raw"]:  # a CloudEvent: raw is that element alone
            assert m["raw"]["intuitentityid"] == m["events"][0]["objectId"]
        else:
            assert m["raw"]["id"] == m["events"][0]["objectId"]

    assert status.get("http_200") == 2 and "http_400" not in status, status
    assert status.get("entities") == len(cloudevents) + 2, status
    assert status.get("unknown_realm_entities") == 1, status
    assert status.get("unsubscribed_entities") == 2, status
    assert d.stop() == 0
