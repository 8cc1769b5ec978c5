"""One simulated QuickBooks company: its objects, their changes, tombstones and the change log."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..events import EventType
from . import catalog
from .clock import SECOND, pacific, parse_timestamp, utc_now, utc_z, whole_second


class ChangeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One change the company made, and the event a correct client must derive from it.

    `last_updated` is the object's new MetaData.LastUpdatedTime (a tombstone's for a hard delete)
    in UTC at whole seconds, which is also the webhook's `lastUpdated` for the change.
    """

    seq: int
    realm_id: str
    entity: str
    object_id: str
    operation: str  # Create | Update | Delete | Void | Merge | Emailed
    event_type: EventType
    last_updated: str  # 2026-11-27T13:04:47Z
    webhook: bool  # False where QuickBooks sends none (TaxCode, TaxRate)
    deleted_id: str | None = None  # on the survivor's record of a Merge


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """What the webhook emitter announces for one change."""

    realm_id: str
    entity: str  # the webhook name: `Currency` for CompanyCurrency
    object_id: str
    operation: str
    last_updated: datetime
    deleted_id: str | None = None


class ChangeLog:
    """Every change of every company in the order made, numbered from 1."""

    def __init__(self) -> None:
        self._records: list[ChangeRecord] = []

    def append(self, **fields: Any) -> ChangeRecord:
        record = ChangeRecord(seq=len(self._records) + 1, **fields)
        self._records.append(record)
        return record

    def records(self, realm_id: str | None = None, after: int = 0) -> list[ChangeRecord]:
        return [r for r in self._records[after:] if realm_id is None or r.realm_id == realm_id]

    def __len__(self) -> int:
        return len(self._records)


class Company:
    """The objects of one realm. Every method runs on the event loop; none awaits.

    Each change of an object is stamped at least one second after that object's previous
    LastUpdatedTime: QuickBooks keeps whole seconds, and a client that identifies a change by
    (object, second) would otherwise see two changes in one second as one.
    """

    def __init__(
        self,
        realm_id: str,
        log: ChangeLog,
        *,
        rng: random.Random,
        now: Callable[[], datetime] = utc_now,
        notify: Callable[[Notification], None] | None = None,
    ) -> None:
        self.realm_id = realm_id
        self._log = log
        self._rng = rng
        self._now = now
        self._notify = notify
        self._objects: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in catalog.ENTITIES}
        self._tombstones: dict[str, list[dict[str, Any]]] = {e: [] for e in catalog.ENTITIES}
        self._next_id: dict[str, int] = dict.fromkeys(catalog.ENTITIES, 1)
        created = pacific(self._now() - timedelta(days=400))
        self.company_info: dict[str, Any] = {
            "CompanyName": f"Sandbox Company {realm_id}",
            "LegalName": f"Sandbox Company {realm_id} LLC",
            "Country": "US",
            "CompanyStartDate": "2025-01-01",
            "Id": "1",
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
        }

    def seed(self, count: int) -> None:
        """`count` objects per entity, all changed more than a day ago, so none looks new."""
        start = whole_second(self._now()) - timedelta(days=2)
        for entity in catalog.ENTITIES:
            for index in range(count):
                created = start + index * timedelta(minutes=1)
                updated = created + (index % 3) * timedelta(hours=1)
                obj = self._new(entity, created)
                obj["MetaData"]["LastUpdatedTime"] = pacific(updated)
                obj["SyncToken"] = str(index % 3)

    # -- reading -------------------------------------------------------------------------------

    # An entity of the API reference the company holds nothing of reads as empty, as in a real
    # company that never used it; CompanyInfo is the one object outside the catalogue.

    def objects(self, entity: str) -> list[dict[str, Any]]:
        if entity == "CompanyInfo":
            return [self.company_info]
        return list(self._objects.get(entity, {}).values())

    def get(self, entity: str, object_id: str) -> dict[str, Any] | None:
        return self._objects.get(entity, {}).get(object_id)

    def changed_since(self, entity: str, since: datetime) -> list[dict[str, Any]]:
        """Live objects and tombstones whose LastUpdatedTime is at or after `since` (for CDC)."""
        return [
            obj
            for obj in (*self.objects(entity), *self._tombstones.get(entity, ()))
            if parse_timestamp(obj["MetaData"]["LastUpdatedTime"]) >= since
        ]

    def counts(self) -> dict[str, int]:
        return {entity: len(objects) for entity, objects in self._objects.items()}

    # -- changing ------------------------------------------------------------------------------

    def apply(
        self, entity: str, operation: str, object_id: str | None = None
    ) -> list[ChangeRecord]:
        """Make one change; raise ValueError when the entity does not allow it or has no target."""
        if entity not in self._objects:
            raise ValueError(f"unknown entity {entity!r}; known: {', '.join(catalog.ENTITIES)}")
        if operation not in catalog.operations(entity):
            allowed = ", ".join(catalog.operations(entity))
            raise ValueError(f"{entity} does not allow {operation}; it allows {allowed}")
        if operation == "Create":
            obj = self._new(entity, whole_second(self._now()))
            stamp = parse_timestamp(obj["MetaData"]["LastUpdatedTime"])
            return [self._record(entity, obj["Id"], "Create", EventType.CREATED, stamp)]
        if operation == "Merge":
            return self._merge(entity, object_id)
        target = self._target(entity, operation, object_id)
        stamp = self._stamp(target)
        if operation == "Delete" and entity in catalog.TRANSACTIONS:
            del self._objects[entity][target["Id"]]
            self._tombstones[entity].append(
                {
                    "domain": "QBO",
                    "status": "Deleted",
                    "Id": target["Id"],
                    "MetaData": {"LastUpdatedTime": pacific(stamp)},
                }
            )
            return [self._record(entity, target["Id"], "Delete", EventType.DELETED, stamp)]
        if operation == "Delete":
            self._deactivate(entity, target)
            self._touch(target, stamp)
            return [self._record(entity, target["Id"], "Delete", EventType.DELETED, stamp)]
        if operation == "Void":
            target.update(catalog.voided_fields(target))
        elif operation == "Emailed":
            target.update(catalog.emailed_fields(pacific(stamp)))
        else:
            target.update(catalog.updated_fields(target, self._rng))
        self._touch(target, stamp)
        return [self._record(entity, target["Id"], operation, EventType.UPDATED, stamp)]

    # -- writes through the REST API -----------------------------------------------------------

    def create(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A new object from a client's body; what it leaves out gets plausible values."""
        obj = self._new(entity, whole_second(self._now()))
        obj.update(_writable(fields))
        stamp = parse_timestamp(obj["MetaData"]["LastUpdatedTime"])
        self._record(entity, obj["Id"], "Create", EventType.CREATED, stamp)
        return obj

    def update(self, entity: str, object_id: str, fields: dict[str, Any], *, sparse: bool) -> None:
        """A client's update: a sparse one changes the fields given, a full one replaces every
        writable field (those left out are gone). Setting Active to false on a name list entry
        deletes it, as QuickBooks announces it, where its operation matrix has Delete."""
        obj = self._objects[entity][object_id]
        was_active = obj.get("Active") is not False
        stamp = self._stamp(obj)
        if not sparse:
            for key in [k for k in obj if k not in _SYSTEM_FIELDS]:
                del obj[key]
        obj.update(_writable(fields))
        if entity in catalog.NAME_LISTS:
            obj.setdefault("Active", True)
        deleted = (
            entity in catalog.NAME_LISTS
            and was_active
            and obj.get("Active") is False
            and "Delete" in catalog.operations(entity)
        )
        if deleted:
            self._deactivate(entity, obj)
        self._touch(obj, stamp)
        if deleted:
            self._record(entity, object_id, "Delete", EventType.DELETED, stamp)
        else:
            self._record(entity, object_id, "Update", EventType.UPDATED, stamp)

    def update_company_info(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A client's sparse update of CompanyInfo (announced by no webhook: not one of the 22)."""
        self.company_info.update(_writable(fields))
        self._touch(self.company_info, self._stamp(self.company_info))
        return self.company_info

    def _merge(self, entity: str, survivor_id: str | None) -> list[ChangeRecord]:
        """The survivor is updated; the merged-away entry is deactivated at the same instant."""
        survivor = self._target(entity, "Merge", survivor_id)
        others = [o for o in self._eligible(entity, "Merge") if o["Id"] != survivor["Id"]]
        if not others:
            raise ValueError(f"no second active {entity} to merge into {survivor['Id']}")
        merged = self._rng.choice(others)
        stamp = max(self._stamp(survivor), self._stamp(merged))
        self._deactivate(entity, merged)
        self._touch(merged, stamp)
        self._touch(survivor, stamp)
        kept = self._record(
            entity, survivor["Id"], "Merge", EventType.UPDATED, stamp, deleted_id=merged["Id"]
        )
        gone = self._record(entity, merged["Id"], "Merge", EventType.DELETED, stamp, quiet=True)
        return [kept, gone]

    def _new(self, entity: str, created: datetime) -> dict[str, Any]:
        number = self._next_id[entity]
        self._next_id[entity] = number + 1
        obj: dict[str, Any] = {
            "Id": str(number),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
        }
        obj.update(catalog.fields(entity, number, self._rng))
        if entity in catalog.NAME_LISTS:
            obj["Active"] = True
        stamp = pacific(created)
        obj["MetaData"] = {"CreateTime": stamp, "LastUpdatedTime": stamp}
        self._objects[entity][obj["Id"]] = obj
        return obj

    def _eligible(self, entity: str, operation: str) -> Iterator[dict[str, Any]]:
        for obj in self._objects[entity].values():
            if obj.get("Active") is False:
                continue  # an edit of a deactivated entry would read back as a delete
            if operation == "Void" and obj.get("PrivateNote") == "Voided":
                continue
            yield obj

    def _target(self, entity: str, operation: str, object_id: str | None) -> dict[str, Any]:
        candidates = list(self._eligible(entity, operation))
        if object_id is not None:
            chosen = next((o for o in candidates if o["Id"] == object_id), None)
            if chosen is None:
                raise ValueError(
                    f"{entity} {object_id} cannot take {operation} (absent or inactive)"
                )
            return chosen
        if not candidates:
            raise ValueError(f"no {entity} left that can take {operation}")
        return self._rng.choice(candidates)

    def _stamp(self, obj: dict[str, Any]) -> datetime:
        now = whole_second(self._now())
        previous = parse_timestamp(obj["MetaData"]["LastUpdatedTime"])
        return now if now > previous else previous + SECOND

    @staticmethod
    def _touch(obj: dict[str, Any], stamp: datetime) -> None:
        obj["SyncToken"] = str(int(obj["SyncToken"]) + 1)
        obj["MetaData"]["LastUpdatedTime"] = pacific(stamp)

    @staticmethod
    def _deactivate(entity: str, obj: dict[str, Any]) -> None:
        obj["Active"] = False
        key = catalog.display_name_key(entity)
        if key is not None and key in obj and not str(obj[key]).endswith(" (deleted)"):
            obj[key] = f"{obj[key]} (deleted)"

    def _record(
        self,
        entity: str,
        object_id: str,
        operation: str,
        event_type: EventType,
        stamp: datetime,
        *,
        deleted_id: str | None = None,
        quiet: bool = False,
    ) -> ChangeRecord:
        webhook = entity not in catalog.NO_WEBHOOKS
        record = self._log.append(
            realm_id=self.realm_id,
            entity=entity,
            object_id=object_id,
            operation=operation,
            event_type=event_type,
            last_updated=utc_z(stamp),
            webhook=webhook,
            deleted_id=deleted_id,
        )
        if webhook and not quiet and self._notify is not None:
            self._notify(
                Notification(
                    realm_id=self.realm_id,
                    entity=catalog.WEBHOOK_NAMES.get(entity, entity),
                    object_id=object_id,
                    operation=operation,
                    last_updated=stamp,
                    deleted_id=deleted_id,
                )
            )
        return record


# What QuickBooks keeps for itself, whatever a client's body says.
_SYSTEM_FIELDS = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse"})


def _writable(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in _SYSTEM_FIELDS}
