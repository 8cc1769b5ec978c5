"""Webhook fan-out: every CloudEvents entity and operation reaches the instances that take it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from qbo_events.config import (
    Callback,
    Config,
    EventSettings,
    Instance,
    Notification,
    Poller,
    Vendor,
)
from qbo_events.events import EventType
from qbo_events.normalize import parse_webhook
from qbo_events.routing import Routes

AT = "2026-11-27T13:04:47.657Z"


def instance(
    name: str, realm: str, urls: str = "", vendor: str = "webhooks", *, enabled: bool = True
) -> Instance:
    return Instance(
        name=name,
        realm_id=realm,
        event=EventSettings(
            notification=Notification(
                enabled=enabled, callback=Callback(url="http://127.0.0.1:9/hook")
            ),
            vendor=Vendor(type=vendor),
            poller=Poller(urls=urls),
        ),
    )


# Realm 111: one instance takes everything, one only invoices and currencies.
# Realm 333: only a filtered instance. Realm 444: polling only. Realm 222: nobody.
ROUTES = Routes(
    Config(
        instances=[
            instance("all", "111"),
            instance("inv", "111", "invoices|currencies"),
            instance("inv333", "333", "invoices"),
            instance("polled", "444", vendor="polling"),
        ]
    )
)


def cloudevent(type_: str, entity_id: str, realm: str = "111") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{realm}-{entity_id}",
        "source": "intuit.test",
        "type": type_,
        "time": AT,
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
    }


@pytest.mark.parametrize(
    ("type_", "entity", "object_type", "event_type", "operation", "instances"),
    [
        (
            "qbo.changeorder.created.v1",
            "ChangeOrder",
            "change-orders",
            "CREATED",
            "Create",
            {"all"},
        ),
        (
            "qbo.companycurrency.updated.v1",
            "CompanyCurrency",
            "currencies",
            "UPDATED",
            "Update",
            {"all", "inv"},
        ),
        ("qbo.invoice.voided.v1", "Invoice", "invoices", "UPDATED", "Void", {"all", "inv"}),
        ("qbo.invoice.void.v1", "Invoice", "invoices", "UPDATED", "Void", {"all", "inv"}),
        ("qbo.invoice.emailed.v1", "Invoice", "invoices", "UPDATED", "Emailed", {"all", "inv"}),
        ("qbo.estimate.emailed.v1", "Estimate", "estimates", "UPDATED", "Emailed", {"all"}),
        ("qbo.payment.void.v1", "Payment", "payments", "UPDATED", "Void", {"all"}),
    ],
)
def test_each_new_cloudevent_reaches_the_instances_that_take_it(
    type_: str,
    entity: str,
    object_type: str,
    event_type: str,
    operation: str,
    instances: set[str],
) -> None:
    routed = ROUTES.route(parse_webhook(orjson.dumps([cloudevent(type_, "5")])))
    assert (routed.unknown, routed.unsubscribed) == (0, 0)
    assert {e.instance for e in routed.events} == instances
    for event in routed.events:
        assert event.object_type == object_type
        assert event.change.entity == entity
        assert event.change.event_type == EventType(event_type)
        assert event.change.operation == operation
        assert event.change.object_id == "5"


@pytest.mark.parametrize(
    ("operation", "event_type"),
    [("Void", EventType.UPDATED), ("Emailed", EventType.UPDATED), ("emailed", EventType.UPDATED)],
)
def test_legacy_void_and_emailed_are_updates_keeping_the_operation(
    operation: str, event_type: EventType
) -> None:
    body = orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "111",
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "8",
                                "operation": operation,
                                "lastUpdated": AT,
                            }
                        ]
                    },
                }
            ]
        }
    )
    routed = ROUTES.route(parse_webhook(body))
    assert sorted(e.instance for e in routed.events) == ["all", "inv"]
    assert {(e.change.event_type, e.change.operation) for e in routed.events} == {
        (event_type, operation.capitalize())
    }


def test_an_entity_no_instance_of_a_served_realm_takes_is_counted_unsubscribed() -> None:
    body = orjson.dumps(
        [
            cloudevent("qbo.changeorder.created.v1", "1", "333"),
            cloudevent("qbo.estimate.emailed.v1", "2", "333"),
            cloudevent("qbo.invoice.void.v1", "3", "333"),
        ]
    )
    routed = ROUTES.route(parse_webhook(body))
    assert [(e.instance, e.change.object_id) for e in routed.events] == [("inv333", "3")]
    assert (routed.unknown, routed.unsubscribed) == (0, 2)


def test_one_array_mixing_realms_routes_each_element_by_its_own_realm() -> None:
    body = orjson.dumps(
        [
            cloudevent("qbo.invoice.emailed.v1", "1", "111"),
            cloudevent("qbo.invoice.emailed.v1", "2", "222"),
            cloudevent("qbo.changeorder.created.v1", "3", "333"),
            cloudevent("qbo.invoice.void.v1", "4", "333"),
            cloudevent("qbo.invoice.void.v1", "5", "444"),
        ]
    )
    routed = ROUTES.route(parse_webhook(body))
    assert sorted((e.instance, e.change.realm_id, e.change.object_id) for e in routed.events) == [
        ("all", "111", "1"),
        ("inv", "111", "1"),
        ("inv333", "333", "4"),
    ]
    # 222 and the polled-only 444 have no webhook instance: unknown to routing (the listener
    # tells the polled realm apart); the change order of 333 is served but not subscribed.
    assert (routed.unknown, routed.unsubscribed) == (2, 1)
    assert ROUTES.polled_only("444") and not ROUTES.polled_only("222")


def test_a_change_one_instance_of_the_realm_takes_is_not_unsubscribed() -> None:
    routed = ROUTES.route(parse_webhook(orjson.dumps([cloudevent("qbo.estimate.emailed.v1", "9")])))
    assert [e.instance for e in routed.events] == ["all"]
    assert routed.unsubscribed == 0


def test_a_realm_whose_instance_has_notifications_off_is_served_but_unsubscribed() -> None:
    routes = Routes(Config(instances=[instance("quiet", "555", enabled=False)]))
    routed = routes.route(
        parse_webhook(orjson.dumps([cloudevent("qbo.invoice.void.v1", "1", "555")]))
    )
    assert (routed.events, routed.unknown, routed.unsubscribed) == ([], 0, 1)
    assert not routes.polled_only("555")


def test_events_keeps_its_two_counts() -> None:
    changes = parse_webhook(
        orjson.dumps(
            [
                cloudevent("qbo.invoice.void.v1", "1", "222"),
                cloudevent("qbo.estimate.emailed.v1", "2", "333"),
            ]
        )
    )
    events, unknown = ROUTES.events(changes)
    assert (events, unknown) == ([], 1)
