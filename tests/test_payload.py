"""payload: the Open Connectors body and the CloudEvent, read back by the official SDK."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.v1.http import from_http as v1_from_http
from qbo_events.events import Change, Event, EventType, Source, make_event
from qbo_events.normalize import change_from_object, parse_webhook
from qbo_events.sinks.payload import render

INVOICE: dict[str, Any] = {
    "Id": "130",
    "SyncToken": "0",
    "TotalAmt": 12.5,
    "Line": [{"Amount": 12.5, "DetailType": "SalesItemLineDetail"}],
    "MetaData": {
        "CreateTime": "2026-11-27T05:04:47-08:00",
        "LastUpdatedTime": "2026-11-27T05:04:47-08:00",
    },
}


def polled() -> Event:
    return make_event(
        "acme", "invoices", change_from_object("9130357766900216", "Invoice", INVOICE)
    )


def merged() -> tuple[Event, Event]:
    body = {
        "eventNotifications": [
            {
                "realmId": "42",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "9",
                            "operation": "Merge",
                            "deletedId": "8",
                            "lastUpdated": "2026-01-02T03:04:08.123Z",
                        }
                    ]
                },
            }
        ]
    }
    survivor, gone = parse_webhook(orjson.dumps(body))
    return make_event("acme", "customers", survivor), make_event("acme", "customers", gone)


def test_open_connectors_polled_event() -> None:
    event = polled()
    body, content_type = render(
        event, instance_name="acme", tags=("Docs", "eu"), fmt="open-connectors"
    )
    assert content_type == "application/json"
    assert orjson.loads(body) == {
        "message": {
            "eventId": event.event_id,
            "instanceId": "acme",
            "instanceName": "acme",
            "instanceTags": ["Docs", "eu"],
            "elementKey": "quickbooks",
            "companyId": "9130357766900216",
            "realmId": "9130357766900216",
            "source": "polling",
            "events": [
                {
                    "eventType": "CREATED",
                    "objectType": "invoices",
                    "objectId": "130",
                    "elementKey": "quickbooks",
                    "date": "2026-11-27T13:04:47Z",
                    "entity": "Invoice",
                }
            ],
            "raw": INVOICE,
        }
    }
    assert event.event_id.startswith("evt_")


def test_open_connectors_merge_pair() -> None:
    survivor, gone = merged()
    first = orjson.loads(render(survivor, instance_name="acme", tags=[], fmt="open-connectors")[0])
    second = orjson.loads(render(gone, instance_name="acme", tags=[], fmt="open-connectors")[0])
    assert first["message"]["events"] == [
        {
            "eventType": "UPDATED",
            "objectType": "customers",
            "objectId": "9",
            "elementKey": "quickbooks",
            "date": "2026-01-02T03:04:08Z",
            "entity": "Customer",
            "operation": "Merge",
            "deletedId": "8",
        }
    ]
    assert second["message"]["events"] == [
        {
            "eventType": "DELETED",
            "objectType": "customers",
            "objectId": "8",
            "elementKey": "quickbooks",
            "date": "2026-01-02T03:04:08Z",
            "entity": "Customer",
            "operation": "Merge",
        }
    ]
    for message in (first["message"], second["message"]):
        assert message["source"] == "webhook"
        assert message["instanceTags"] == []
        assert message["raw"] == {
            "realmId": "42",
            "name": "Customer",
            "id": "9",
            "operation": "Merge",
            "deletedId": "8",
            "lastUpdated": "2026-01-02T03:04:08.123Z",
        }
    assert first["message"]["eventId"] != second["message"]["eventId"]


def test_open_connectors_body_is_compact_utf8() -> None:
    change = Change(
        realm_id="1",
        entity="Customer",
        object_id="5",
        event_type=EventType.UPDATED,
        date="2026-01-01T00:00:00Z",
        source=Source.POLLING,
        raw={"DisplayName": "Café Zoë"},
    )
    body, _ = render(
        make_event("x", "customers", change), instance_name="x", tags=[], fmt="open-connectors"
    )
    assert "Café Zoë".encode() in body
    assert b", " not in body and b": " not in body


@pytest.mark.parametrize("event_type", list(EventType))
def test_cloudevents_round_trip_with_the_official_sdk(event_type: EventType) -> None:
    change = Change(
        realm_id="310687",
        entity="JournalEntry",
        object_id="77",
        event_type=event_type,
        date="2026-11-27T13:04:47Z",
        source=Source.WEBHOOK,
        raw={"specversion": "1.0", "type": "qbo.journalentry.created.v1"},
        operation="Create",
    )
    event = make_event("acme", "journal-entries", change)
    body, content_type = render(event, instance_name="acme", tags=["Docs"], fmt="cloudevents")
    assert content_type == "application/cloudevents+json"
    open_connectors = orjson.loads(
        render(event, instance_name="acme", tags=["Docs"], fmt="open-connectors")[0]
    )

    parsed = from_http_event(HTTPMessage(headers={"content-type": content_type}, body=body))
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == event.event_id
    assert parsed.get_source() == "qbo-events/acme"
    assert parsed.get_type() == f"com.quickbooks.journal-entries.{event_type.value.lower()}"
    assert parsed.get_subject() == "77"
    assert parsed.get_time() == datetime(2026, 11, 27, 13, 4, 47, tzinfo=UTC)
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_data() == open_connectors["message"]

    # The SDK's 1.x API, which most receivers still use.
    legacy = v1_from_http({"content-type": content_type}, body)
    assert legacy["id"] == event.event_id
    assert legacy["type"] == parsed.get_type()
    assert legacy["subject"] == "77"
    assert legacy.data == open_connectors["message"]


def test_cloudevents_has_exactly_the_spec_attributes() -> None:
    body, _ = render(polled(), instance_name="acme", tags=[], fmt="cloudevents")
    assert set(orjson.loads(body)) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
    }


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        render(polled(), instance_name="acme", tags=[], fmt="xml")
