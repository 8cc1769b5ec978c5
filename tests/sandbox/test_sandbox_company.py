"""The simulated company: seeds, every kind of change, and a change log that matches the objects."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qbo_events.events import EventType
from qbo_events.sandbox import catalog
from qbo_events.sandbox.clock import parse_timestamp
from qbo_events.sandbox.company import ChangeLog, ChangeRecord, Company, Notification

NOW = datetime(2026, 11, 27, 13, 4, 47, 250_000, tzinfo=UTC)


def _company(seed: int = 3, now: datetime = NOW) -> tuple[Company, list[Notification]]:
    notes: list[Notification] = []
    company = Company(
        "123", ChangeLog(), rng=random.Random(1), now=lambda: now, notify=notes.append
    )
    company.seed(seed)
    return company, notes


def _derived(obj: dict[str, Any]) -> EventType:
    """The daemon's rule for a polled object."""
    if obj.get("status") == "Deleted" or obj.get("Active") is False:
        return EventType.DELETED
    meta = obj["MetaData"]
    if meta.get("CreateTime") == meta["LastUpdatedTime"]:
        return EventType.CREATED
    return EventType.UPDATED


def _as_polled(company: Company, record: ChangeRecord) -> dict[str, Any]:
    obj = company.get(record.entity, record.object_id)
    if obj is not None:
        return obj
    since = parse_timestamp(record.last_updated)
    stones = [
        o
        for o in company.changed_since(record.entity, since)
        if o["Id"] == record.object_id and o.get("status") == "Deleted"
    ]
    assert len(stones) == 1, record
    return stones[0]


def test_seeds_every_entity_in_the_past() -> None:
    company, notes = _company(seed=4)
    assert set(company.counts()) == set(catalog.ENTITIES) and len(catalog.ENTITIES) == 22
    for entity in catalog.ENTITIES:
        objects = company.objects(entity)
        assert len(objects) == 4
        for obj in objects:
            assert isinstance(obj["Id"], str) and isinstance(obj["SyncToken"], str)
            assert obj["domain"] == "QBO" and obj["sparse"] is False
            updated = parse_timestamp(obj["MetaData"]["LastUpdatedTime"])
            assert updated < NOW - timedelta(days=1)
            assert obj["MetaData"]["LastUpdatedTime"].endswith("-08:00")
            assert (obj.get("Active") is True) == (entity in catalog.NAME_LISTS)
        assert company.changed_since(entity, NOW - timedelta(days=1)) == []
    assert notes == []


@pytest.mark.parametrize("entity", catalog.ENTITIES)
def test_every_change_reads_back_as_its_logged_event(entity: str) -> None:
    company, _ = _company()
    for operation in catalog.operations(entity):
        for record in company.apply(entity, operation):
            obj = _as_polled(company, record)
            moment = parse_timestamp(obj["MetaData"]["LastUpdatedTime"])
            assert moment == parse_timestamp(record.last_updated), record
            assert _derived(obj) == record.event_type, (record, obj)
            assert record.webhook == (entity not in ("TaxCode", "TaxRate"))


def test_changes_of_one_object_land_on_distinct_seconds() -> None:
    company, _ = _company()
    created = company.apply("Invoice", "Create")[0]
    records = [created]
    for _ in range(3):
        records += company.apply("Invoice", "Update", created.object_id)
    records += company.apply("Invoice", "Void", created.object_id)
    records += company.apply("Invoice", "Delete", created.object_id)
    stamps = [parse_timestamp(r.last_updated) for r in records]
    assert stamps == [stamps[0] + timedelta(seconds=i) for i in range(6)]
    assert stamps[0] == NOW.replace(microsecond=0)
    assert [r.event_type for r in records] == [EventType.CREATED] + [EventType.UPDATED] * 4 + [
        EventType.DELETED
    ]
    assert company.get("Invoice", created.object_id) is None


def test_update_bumps_sync_token_and_void_zeroes_amounts() -> None:
    company, _ = _company()
    before = dict(company.get("Payment", "1") or {})
    company.apply("Payment", "Void", "1")
    after = company.get("Payment", "1") or {}
    assert int(after["SyncToken"]) == int(before["SyncToken"]) + 1
    assert after["TotalAmt"] == 0 and after["PrivateNote"] == "Voided"
    assert after["MetaData"]["CreateTime"] == before["MetaData"]["CreateTime"]


def test_emailed_marks_the_transaction_sent_and_is_an_update() -> None:
    company, _ = _company()
    (record,) = company.apply("Invoice", "Emailed", "1")
    invoice = company.get("Invoice", "1") or {}
    assert record.operation == "Emailed" and record.event_type == EventType.UPDATED
    assert invoice["EmailStatus"] == "EmailSent"
    assert invoice["DeliveryInfo"]["DeliveryType"] == "Email"
    assert invoice["MetaData"]["LastUpdatedTime"] == invoice["DeliveryInfo"]["DeliveryTime"]
    assert "Emailed" not in catalog.operations("Customer")
    with pytest.raises(ValueError, match="does not allow Emailed"):
        company.apply("Bill", "Emailed", "1")


def test_name_list_delete_deactivates_and_is_announced_as_delete() -> None:
    company, notes = _company()
    (record,) = company.apply("Customer", "Delete", "2")
    customer = company.get("Customer", "2") or {}
    assert customer["Active"] is False and customer["DisplayName"].endswith(" (deleted)")
    assert record.event_type == EventType.DELETED
    assert notes[-1].operation == "Delete" and notes[-1].object_id == "2"
    assert notes[-1].last_updated == parse_timestamp(customer["MetaData"]["LastUpdatedTime"])
    with pytest.raises(ValueError, match="cannot take Update"):
        company.apply("Customer", "Update", "2")


def test_merge_updates_the_survivor_and_deactivates_the_other_at_one_instant() -> None:
    company, notes = _company()
    kept, gone = company.apply("Vendor", "Merge", "1")
    assert (kept.object_id, kept.deleted_id, kept.event_type) == ("1", gone.object_id, "UPDATED")
    assert gone.event_type == EventType.DELETED and gone.operation == "Merge"
    assert kept.last_updated == gone.last_updated
    assert (company.get("Vendor", gone.object_id) or {})["Active"] is False
    (note,) = notes
    assert (note.operation, note.object_id, note.deleted_id) == ("Merge", "1", gone.object_id)


def test_tax_entities_change_without_webhooks_and_currency_uses_its_webhook_name() -> None:
    company, notes = _company()
    company.apply("TaxCode", "Update")
    company.apply("TaxRate", "Create")
    assert notes == []
    company.apply("CompanyCurrency", "Update")
    assert notes[-1].entity == "Currency"


@pytest.mark.parametrize(
    ("entity", "operation"),
    [("TaxCode", "Delete"), ("Invoice", "Merge"), ("Bill", "Void"), ("Term", "Delete")],
)
def test_operations_the_entity_does_not_allow_are_refused(entity: str, operation: str) -> None:
    company, _ = _company()
    with pytest.raises(ValueError, match="does not allow"):
        company.apply(entity, operation)


def test_created_objects_are_stamped_now_and_numbered_on() -> None:
    company, _ = _company(seed=3)
    (record,) = company.apply("Bill", "Create")
    bill = company.get("Bill", record.object_id) or {}
    assert record.object_id == "4"
    assert bill["MetaData"]["CreateTime"] == bill["MetaData"]["LastUpdatedTime"]
    assert bill["MetaData"]["CreateTime"] == "2026-11-27T05:04:47-08:00"
    assert record.last_updated == "2026-11-27T13:04:47Z"
