"""normalize: timestamps, both webhook formats, polled objects, and the event ids they lead to."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from qbo_events.events import Change, EventType, Source, make_event
from qbo_events.normalize import (
    WebhookPayloadError,
    change_from_object,
    parse_webhook,
    utc_second,
)
from qbo_events.quickbooks.resources import canonical_entity, object_type

# Intuit's .NET SDK test payload, byte for byte (QBO-FACTS 1.3).
DOTNET_LEGACY = (
    b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":['
    b'{"name":"Vendor","id":"40","operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},'
    b'{"name":"Customer","id":"43","operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}'
    b"]}}]}"
)

# Intuit's blog samples (QBO-FACTS 1.1 and 2.1).
BLOG_LEGACY = b"""{
  "eventNotifications": [
    {
      "realmId": "310687",
      "dataChangeEvent": {
        "entities": [
          { "id": "1234", "operation": "Create", "name": "Account",
            "lastUpdated": "2025-09-08T20:52:31.657Z" }
        ]
      }
    }
  ]
}"""
BLOG_CLOUDEVENTS = b"""[
  {
    "specversion": "1.0",
    "id": "88cd52aa-33b6-4351-9aa4-47572edbd068",
    "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
    "type": "qbo.account.created.v1",
    "datacontenttype": "application/json",
    "time": "2025-09-10T21:31:25.179851517Z",
    "intuitentityid": "1234",
    "intuitaccountid": "310687",
    "data": {}
  }
]"""


def cloudevent(type_: str, entity_id: str = "7", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"id-{type_}-{entity_id}",
        "source": "intuit.test",
        "type": type_,
        "datacontenttype": "application/json",
        "time": "2025-10-07T19:59:07.034359333Z",
        "intuitentityid": entity_id,
        "intuitaccountid": "4620816365",
        "data": {},
    }
    event.update(extra)
    return event


def summary(changes: list[Change]) -> list[tuple[str, str, str, EventType, str | None, str | None]]:
    return [
        (c.realm_id, c.entity, c.object_id, c.event_type, c.operation, c.deleted_id)
        for c in changes
    ]


# --- utc_second -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-09-08T20:52:31.657Z", "2025-09-08T20:52:31Z"),
        ("2025-10-07T19:59:07.034359333Z", "2025-10-07T19:59:07Z"),
        ("2025-10-07T19:59:07.999999999Z", "2025-10-07T19:59:07Z"),  # truncated, not rounded
        ("2016-10-05T03:09:04.000Z", "2016-10-05T03:09:04Z"),
        ("2026-11-27T05:04:47-08:00", "2026-11-27T13:04:47Z"),
        ("2026-11-27T05:04:47-0800", "2026-11-27T13:04:47Z"),
        ("2026-11-27T05:04:47-08", "2026-11-27T13:04:47Z"),
        ("2026-11-27T18:34:47.5+05:30", "2026-11-27T13:04:47Z"),
        ("2026-01-01T07:30:00+0900", "2025-12-31T22:30:00Z"),  # crosses the year backwards
        ("2026-11-27T13:04:47+00:00", "2026-11-27T13:04:47Z"),
        ("2026-11-27t13:04:47z", "2026-11-27T13:04:47Z"),
        ("2026-11-27 13:04:47Z", "2026-11-27T13:04:47Z"),
        ("2026-11-27T13:04Z", "2026-11-27T13:04:00Z"),
        ("  2026-11-27T13:04:47Z\n", "2026-11-27T13:04:47Z"),
        # No offset: Pacific time, standard (PST, -8) in winter and daylight (PDT, -7) in summer.
        ("2026-11-27T05:04:47", "2026-11-27T13:04:47Z"),
        ("2026-07-01T05:04:47.123", "2026-07-01T12:04:47Z"),
        ("2016-01-01T00:00:00", "2016-01-01T08:00:00Z"),
        # Epoch milliseconds, as a number or a numeric string.
        (1475637544000, "2016-10-05T03:19:04Z"),
        (1475637544999, "2016-10-05T03:19:04Z"),
        ("1475637544999", "2016-10-05T03:19:04Z"),
        (1475637544999.9, "2016-10-05T03:19:04Z"),
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),  # floor, not toward zero
    ],
)
def test_utc_second(value: str | int | float, expected: str) -> None:
    assert utc_second(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "yesterday",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T00:00:60Z",
        "2025-01-01T00:00:00+24:00",
        "2025-01-01T00:00:00+01:60",
        "2025-01-01T00:00:00Zjunk",
        "2025-01-01",  # a date is not an instant
        "2025-01-01T00:00:00.Z",
        "٢٠٢٥-01-01T00:00:00Z",  # non-ASCII digits
        "1e12",
        "NaN",
        float("nan"),
        float("inf"),
        10**30,
        True,
        None,
        ["2025-01-01T00:00:00Z"],
    ],
)
def test_utc_second_rejects_garbage(value: Any) -> None:
    with pytest.raises(ValueError):
        utc_second(value)


def test_utc_second_out_of_range_after_conversion_is_value_error() -> None:
    with pytest.raises(ValueError):
        utc_second("9999-12-31T23:59:59-01:00")


# --- legacy webhooks --------------------------------------------------------------------------


def test_dotnet_sample() -> None:
    changes = parse_webhook(DOTNET_LEGACY)
    assert summary(changes) == [
        ("1269959970", "Vendor", "40", EventType.UPDATED, "Update", None),
        ("1269959970", "Customer", "43", EventType.CREATED, "Create", None),
    ]
    assert [c.date for c in changes] == ["2016-10-05T03:09:04Z", "2016-10-05T03:07:04Z"]
    assert all(c.source is Source.WEBHOOK for c in changes)
    assert changes[0].raw == {
        "realmId": "1269959970",
        "name": "Vendor",
        "id": "40",
        "operation": "Update",
        "lastUpdated": "2016-10-05T03:09:04.000Z",
    }
    assert next(iter(changes[0].raw)) == "realmId"


def test_blog_legacy_sample() -> None:
    [change] = parse_webhook(BLOG_LEGACY)
    assert summary([change]) == [("310687", "Account", "1234", EventType.CREATED, "Create", None)]
    assert change.date == "2025-09-08T20:52:31Z"


def test_legacy_several_realms_and_entities() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "111",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Invoice",
                            "id": "1",
                            "operation": "Create",
                            "lastUpdated": "2026-01-02T03:04:05.678Z",
                        },
                        {
                            "name": "Invoice",
                            "id": "1",
                            "operation": "Void",
                            "lastUpdated": "2026-01-02T03:04:06Z",
                        },
                        {
                            "name": "Invoice",
                            "id": "2",
                            "operation": "Emailed",
                            "lastUpdated": "2026-01-02T03:04:07-08:00",
                        },
                        {
                            "name": "Bill",
                            "id": "3",
                            "operation": "Delete",
                            "lastUpdated": 1767322800000,
                        },
                    ]
                },
            },
            {
                "realmId": "222",
                "extra": {"ignored": True},
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "9",
                            "operation": "Merge",
                            "deletedId": "8",
                            "lastUpdated": "2026-01-02T03:04:08Z",
                            "future": "field",
                        },
                        {
                            "name": "Currency",
                            "id": "5",
                            "operation": "Update",
                            "lastUpdated": "2026-01-02T03:04:09Z",
                        },
                        {
                            "name": "Item",
                            "id": "6",
                            "operation": "Archive",
                            "lastUpdated": "2026-01-02T03:04:10Z",
                        },
                    ]
                },
            },
            {"realmId": "333", "dataChangeEvent": {"entities": []}},
        ]
    }
    changes = parse_webhook(orjson.dumps(body))
    assert summary(changes) == [
        ("111", "Invoice", "1", EventType.CREATED, "Create", None),
        ("111", "Invoice", "1", EventType.UPDATED, "Void", None),
        ("111", "Invoice", "2", EventType.UPDATED, "Emailed", None),
        ("111", "Bill", "3", EventType.DELETED, "Delete", None),
        ("222", "Customer", "9", EventType.UPDATED, "Merge", "8"),
        ("222", "Customer", "8", EventType.DELETED, "Merge", None),
        ("222", "CompanyCurrency", "5", EventType.UPDATED, "Update", None),
        ("222", "Item", "6", EventType.UNKNOWN, "Archive", None),
    ]
    assert [c.date for c in changes] == [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:06Z",
        "2026-01-02T11:04:07Z",
        "2026-01-02T03:00:00Z",
        "2026-01-02T03:04:08Z",
        "2026-01-02T03:04:08Z",
        "2026-01-02T03:04:09Z",
        "2026-01-02T03:04:10Z",
    ]
    merge_updated, merge_deleted = changes[4], changes[5]
    assert merge_updated.raw is merge_deleted.raw
    assert merge_updated.raw == {
        "realmId": "222",
        "name": "Customer",
        "id": "9",
        "operation": "Merge",
        "deletedId": "8",
        "lastUpdated": "2026-01-02T03:04:08Z",
        "future": "field",
    }
    assert changes[6].raw["name"] == "Currency"  # raw keeps what QuickBooks sent


def test_legacy_merge_without_deleted_id_is_one_update() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "1",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Vendor",
                            "id": "4",
                            "operation": "Merge",
                            "lastUpdated": "2026-01-01T00:00:00Z",
                        },
                    ]
                },
            }
        ]
    }
    assert summary(parse_webhook(orjson.dumps(body))) == [
        ("1", "Vendor", "4", EventType.UPDATED, "Merge", None)
    ]


def test_legacy_operation_case_is_tolerated_and_spelt_as_quickbooks_does() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "1",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "vendor",
                            "id": "4",
                            "operation": "DELETE",
                            "lastUpdated": "2026-01-01T00:00:00Z",
                        },
                    ]
                },
            }
        ]
    }
    assert summary(parse_webhook(orjson.dumps(body))) == [
        ("1", "Vendor", "4", EventType.DELETED, "Delete", None)
    ]


def test_numeric_ids_are_accepted_as_strings() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": 310687,
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Bill",
                            "id": 12,
                            "operation": "Update",
                            "lastUpdated": "2026-01-01T00:00:00Z",
                        },
                    ]
                },
            }
        ]
    }
    [change] = parse_webhook(orjson.dumps(body))
    assert (change.realm_id, change.object_id) == ("310687", "12")


def test_empty_batches_are_not_errors() -> None:
    assert parse_webhook(b'{"eventNotifications": []}') == []
    assert parse_webhook(b"[]") == []


# --- CloudEvents webhooks ---------------------------------------------------------------------


def test_blog_cloudevents_sample() -> None:
    [change] = parse_webhook(BLOG_CLOUDEVENTS)
    assert summary([change]) == [("310687", "Account", "1234", EventType.CREATED, "Create", None)]
    assert change.date == "2025-09-10T21:31:25Z"
    assert change.source is Source.WEBHOOK
    assert change.raw == orjson.loads(BLOG_CLOUDEVENTS)[0]


def test_cloudevents_array() -> None:
    events = [
        cloudevent("qbo.journalentry.created.v1", "1"),
        cloudevent("qbo.currency.updated.v1", "2"),
        cloudevent("qbo.companycurrency.updated.v1", "3", intuitaccountid="999"),
        cloudevent("qbo.customer.merged.v1", "123", data={"deletedid": "27"}),
        cloudevent("qbo.vendor.merged.v1", "124", data={"deletedId": "28", "other": 1}),
        cloudevent("qbo.invoice.void.v1", "4"),
        cloudevent("qbo.invoice.voided.v1", "5"),
        cloudevent("qbo.invoice.emailed.v1", "6"),
        cloudevent("qbo.invoice.deleted.v1", "7"),
        cloudevent("qbo.timeactivity.deleted.v1", "8"),
        cloudevent("qbo.estimate.archived.v1", "9"),
        cloudevent("qbo.purchase.created.v2", "10", extension="tolerated"),
    ]
    changes = parse_webhook(orjson.dumps(events))
    assert summary(changes) == [
        ("4620816365", "JournalEntry", "1", EventType.CREATED, "Create", None),
        ("4620816365", "CompanyCurrency", "2", EventType.UPDATED, "Update", None),
        ("999", "CompanyCurrency", "3", EventType.UPDATED, "Update", None),
        ("4620816365", "Customer", "123", EventType.UPDATED, "Merge", "27"),
        ("4620816365", "Customer", "27", EventType.DELETED, "Merge", None),
        ("4620816365", "Vendor", "124", EventType.UPDATED, "Merge", "28"),
        ("4620816365", "Vendor", "28", EventType.DELETED, "Merge", None),
        ("4620816365", "Invoice", "4", EventType.UPDATED, "Void", None),
        ("4620816365", "Invoice", "5", EventType.UPDATED, "Void", None),
        ("4620816365", "Invoice", "6", EventType.UPDATED, "Emailed", None),
        ("4620816365", "Invoice", "7", EventType.DELETED, "Delete", None),
        ("4620816365", "TimeActivity", "8", EventType.DELETED, "Delete", None),
        ("4620816365", "Estimate", "9", EventType.UNKNOWN, "archived", None),
        ("4620816365", "Purchase", "10", EventType.CREATED, "Create", None),
    ]
    assert {c.date for c in changes} == {"2025-10-07T19:59:07Z"}
    # raw is the single CloudEvent, for both halves of a merge
    assert changes[3].raw == events[3]
    assert changes[4].raw == events[3]
    assert changes[0].raw == events[0]


def test_cloudevents_only_entities_and_the_void_and_emailed_operations() -> None:
    events = [
        cloudevent("qbo.changeorder.created.v1", "1"),
        cloudevent("qbo.companycurrency.deleted.v1", "2"),
        cloudevent("qbo.estimate.emailed.v1", "3"),
        cloudevent("qbo.payment.void.v1", "4"),
        cloudevent("qbo.salesreceipt.EMAILED.v1", "5"),
    ]
    changes = parse_webhook(orjson.dumps(events))
    assert summary(changes) == [
        ("4620816365", "ChangeOrder", "1", EventType.CREATED, "Create", None),
        ("4620816365", "CompanyCurrency", "2", EventType.DELETED, "Delete", None),
        ("4620816365", "Estimate", "3", EventType.UPDATED, "Emailed", None),
        ("4620816365", "Payment", "4", EventType.UPDATED, "Void", None),
        ("4620816365", "SalesReceipt", "5", EventType.UPDATED, "Emailed", None),
    ]
    assert [object_type(c.entity) for c in changes] == [
        "change-orders",
        "currencies",
        "estimates",
        "payments",
        "sales-receipts",
    ]


def test_cloudevents_without_data_or_with_null_data() -> None:
    without = cloudevent("qbo.customer.updated.v1")
    del without["data"]
    nulled = cloudevent("qbo.customer.merged.v1", data=None)
    changes = parse_webhook(orjson.dumps([without, nulled]))
    assert [c.event_type for c in changes] == [EventType.UPDATED, EventType.UPDATED]
    assert changes[1].deleted_id is None


# --- garbage ----------------------------------------------------------------------------------


def legacy_with(**entity: Any) -> bytes:
    base: dict[str, Any] = {
        "name": "Invoice",
        "id": "1",
        "operation": "Create",
        "lastUpdated": "2026-01-01T00:00:00Z",
    }
    base.update(entity)
    fields = {k: v for k, v in base.items() if v is not ...}
    return orjson.dumps(
        {"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [fields]}}]}
    )


def cloudevents_with(**fields: Any) -> bytes:
    event = cloudevent("qbo.invoice.created.v1")
    event.update(fields)
    return orjson.dumps([{k: v for k, v in event.items() if v is not ...}])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b'{"eventNotifications": [', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"{}", "without eventNotifications"),
        (b'{"foo": 1}', "without eventNotifications"),
        (b"[1,2]", "[0]: expected an object"),
        (b'"text"', "not an object or array"),
        (b"42", "not an object or array"),
        (b"null", "not an object or array"),
        (b'{"eventNotifications": {}}', "eventNotifications: expected an array"),
        (b'{"eventNotifications": [1]}', "eventNotifications[0]: expected an object"),
        (b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}', "realmId"),
        (
            b'{"eventNotifications": [{"realmId": "", "dataChangeEvent": {"entities": []}}]}',
            "realmId",
        ),
        (b'{"eventNotifications": [{"realmId": "1"}]}', "dataChangeEvent"),
        (b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {}}]}', "entities"),
        (legacy_with(id=...), "entities[0].id"),
        (legacy_with(id=""), "entities[0].id"),
        (legacy_with(id=True), "entities[0].id"),
        (legacy_with(id={"x": 1}), "entities[0].id"),
        (legacy_with(name=...), "entities[0].name"),
        (legacy_with(name="Bad Name!"), "entities[0].name"),
        (legacy_with(operation=...), "entities[0].operation"),
        (legacy_with(operation=""), "entities[0].operation"),
        (legacy_with(lastUpdated=...), "entities[0].lastUpdated"),
        (legacy_with(lastUpdated="last tuesday"), "entities[0].lastUpdated"),
        (legacy_with(lastUpdated=None), "entities[0].lastUpdated"),
        (legacy_with(deletedId=["8"]), "entities[0].deletedId"),
        (b'[{"specversion": "1.0"}]', "[0].type"),
        (b'[{"type": "qbo.invoice.created.v1"}]', "[0].specversion"),
        (cloudevents_with(type="com.example.created"), "[0].type"),
        (cloudevents_with(type="qbo.invoice.created"), "[0].type"),
        (cloudevents_with(type="qbo..created.v1"), "[0].type"),
        (cloudevents_with(intuitentityid=...), "[0].intuitentityid"),
        (cloudevents_with(intuitaccountid=...), "[0].intuitaccountid"),
        (cloudevents_with(intuitaccountid=""), "[0].intuitaccountid"),
        (cloudevents_with(time=...), "[0].time"),
        (cloudevents_with(time="2025-10-07 at noon"), "[0].time"),
        (cloudevents_with(data="deletedid=27"), "[0].data"),
        (cloudevents_with(data={"deletedid": {"id": 27}}), "[0].data.deletedId"),
    ],
)
def test_garbage_raises_webhook_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=re.escape(message)):
        parse_webhook(body)


def test_one_bad_element_rejects_the_whole_body() -> None:
    good = cloudevent("qbo.invoice.created.v1")
    bad = cloudevent("qbo.invoice.created.v1", time="soon")
    with pytest.raises(WebhookPayloadError, match=r"\[1\]\.time"):
        parse_webhook(orjson.dumps([good, bad]))


def test_webhook_payload_error_is_a_value_error() -> None:
    assert issubclass(WebhookPayloadError, ValueError)


# --- polled objects ---------------------------------------------------------------------------


def invoice(**fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "Id": "130",
        "SyncToken": "1",
        "domain": "QBO",
        "MetaData": {
            "CreateTime": "2026-11-26T09:00:00-08:00",
            "LastUpdatedTime": "2026-11-27T05:04:47-08:00",
        },
    }
    obj.update(fields)
    return obj


def test_polled_update() -> None:
    obj = invoice()
    change = change_from_object("9130357766900216", "Invoice", obj)
    assert change == Change(
        realm_id="9130357766900216",
        entity="Invoice",
        object_id="130",
        event_type=EventType.UPDATED,
        date="2026-11-27T13:04:47Z",
        source=Source.POLLING,
        raw=obj,
        operation=None,
        deleted_id=None,
    )
    assert change.raw is obj


def test_polled_create_compares_instants_not_strings() -> None:
    same = {"CreateTime": "2026-11-27T13:04:47Z", "LastUpdatedTime": "2026-11-27T05:04:47-08:00"}
    assert (
        change_from_object("1", "Invoice", invoice(MetaData=same)).event_type is EventType.CREATED
    )
    later = {"CreateTime": "2026-11-27T13:04:47Z", "LastUpdatedTime": "2026-11-27T13:04:47.5Z"}
    assert change_from_object("1", "Invoice", invoice(MetaData=later)).event_type is (
        EventType.UPDATED
    )


def test_polled_tombstone() -> None:
    tombstone = {
        "domain": "QBO",
        "status": "Deleted",
        "Id": "2359",
        "MetaData": {"LastUpdatedTime": "2021-12-15T09:14:16-08:00"},
    }
    change = change_from_object("1", "Payment", tombstone)
    assert (change.event_type, change.object_id, change.date) == (
        EventType.DELETED,
        "2359",
        "2021-12-15T17:14:16Z",
    )


def test_polled_inactive_name_list_record_is_deleted() -> None:
    customer = invoice(Active=False, DisplayName="Gone")
    assert change_from_object("1", "Customer", customer).event_type is EventType.DELETED
    # Only a real false counts; a created-and-deactivated record is still DELETED.
    active = invoice(Active=True)
    assert change_from_object("1", "Customer", active).event_type is EventType.UPDATED
    fresh = invoice(
        Active=False,
        MetaData={"CreateTime": "2026-01-01T00:00:00Z", "LastUpdatedTime": "2026-01-01T00:00:00Z"},
    )
    assert change_from_object("1", "Customer", fresh).event_type is EventType.DELETED


def test_polled_numeric_id_and_entity_canonicalised() -> None:
    change = change_from_object("1", "companycurrency", invoice(Id=7))
    assert (change.object_id, change.entity) == ("7", "CompanyCurrency")


@pytest.mark.parametrize(
    "obj",
    [
        {"MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00Z"}},
        {"Id": "", "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00Z"}},
        {"Id": None, "MetaData": {"LastUpdatedTime": "2026-01-01T00:00:00Z"}},
        {"Id": "1"},
        {"Id": "1", "MetaData": None},
        {"Id": "1", "MetaData": {"CreateTime": "2026-01-01T00:00:00Z"}},
        {"Id": "1", "MetaData": {"LastUpdatedTime": "garbage"}},
        {"Id": "1", "MetaData": {"LastUpdatedTime": True}},
    ],
)
def test_polled_object_without_id_or_time_is_value_error(obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        change_from_object("1", "Invoice", obj)


# --- the same change seen twice gets one event id ---------------------------------------------


def test_webhook_and_poll_of_one_update_share_the_event_id() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "9130357766900216",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Invoice",
                            "id": "130",
                            "operation": "Update",
                            "lastUpdated": "2026-11-27T13:04:47.657Z",
                        }
                    ]
                },
            }
        ]
    }
    [from_webhook] = parse_webhook(orjson.dumps(body))
    from_poll = change_from_object("9130357766900216", "Invoice", invoice())
    assert from_webhook.source is not from_poll.source
    a = make_event("acme", object_type("Invoice"), from_webhook)
    b = make_event("acme", object_type("Invoice"), from_poll)
    assert a.event_id == b.event_id
    # and a different instance, or a later second, is a different event
    assert make_event("other", "invoices", from_poll).event_id != a.event_id
    later = change_from_object(
        "9130357766900216",
        "Invoice",
        invoice(
            MetaData={
                "CreateTime": "2026-11-26T09:00:00-08:00",
                "LastUpdatedTime": "2026-11-27T05:04:48-08:00",
            }
        ),
    )
    assert make_event("acme", "invoices", later).event_id != a.event_id


def test_cloudevent_and_legacy_and_poll_of_one_currency_share_the_event_id() -> None:
    legacy = {
        "eventNotifications": [
            {
                "realmId": "5",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Currency",
                            "id": "2",
                            "operation": "Create",
                            "lastUpdated": "2026-03-01T10:00:00.250Z",
                        }
                    ]
                },
            }
        ]
    }
    cloud = [
        cloudevent(
            "qbo.currency.created.v1", "2", intuitaccountid="5", time="2026-03-01T10:00:00.9Z"
        )
    ]
    polled = invoice(
        Id="2",
        MetaData={
            "CreateTime": "2026-03-01T02:00:00-08:00",
            "LastUpdatedTime": "2026-03-01T02:00:00-08:00",
        },
    )
    changes = [
        *parse_webhook(orjson.dumps(legacy)),
        *parse_webhook(orjson.dumps(cloud)),
        change_from_object("5", "CompanyCurrency", polled),
    ]
    ids = {make_event("acme", object_type(c.entity), c).event_id for c in changes}
    assert len(changes) == 3
    assert len(ids) == 1


def test_webhook_delete_and_deactivated_poll_share_the_event_id() -> None:
    body = {
        "eventNotifications": [
            {
                "realmId": "5",
                "dataChangeEvent": {
                    "entities": [
                        {
                            "name": "Customer",
                            "id": "58",
                            "operation": "Delete",
                            "lastUpdated": "2026-03-01T10:00:00Z",
                        }
                    ]
                },
            }
        ]
    }
    [hook] = parse_webhook(orjson.dumps(body))
    polled = change_from_object(
        "5",
        "Customer",
        invoice(
            Id="58",
            Active=False,
            MetaData={
                "CreateTime": "2025-01-01T00:00:00Z",
                "LastUpdatedTime": "2026-03-01T02:00:00-08:00",
            },
        ),
    )
    assert (
        make_event("a", "customers", hook).event_id == make_event("a", "customers", polled).event_id
    )


# --- entity names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "entity", "resource"),
    [
        ("journalentry", "JournalEntry", "journal-entries"),
        ("currency", "CompanyCurrency", "currencies"),
        ("Currency", "CompanyCurrency", "currencies"),
        ("CompanyCurrency", "CompanyCurrency", "currencies"),
        ("Item", "Item", "products"),
        ("term", "Term", "credit-terms"),
        ("Estimate", "Estimate", "estimates"),
        ("TaxAgency", "TaxAgency", "tax-agencies"),
        ("preferences", "Preferences", "preferences"),
        ("Class", "Class", "classes"),
        ("Budget", "Budget", "budgets"),
        ("journalcode", "JournalCode", "journal-codes"),
        ("ChangeOrder", "ChangeOrder", "change-orders"),
        ("SalesTax", "SalesTax", "sales-taxes"),
        ("Holiday", "Holiday", "holidays"),
        ("timeactivity", "TimeActivity", "time-activities"),
        ("Box", "Box", "boxes"),
        ("CDCResponse", "CDCResponse", "cdc-responses"),
    ],
)
def test_entity_names(name: str, entity: str, resource: str) -> None:
    assert canonical_entity(name) == entity
    assert object_type(name) == resource
