"""The immutable values that cross stages: a Change a source saw, an Event per instance."""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import msgspec


class EventType(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"


class Source(enum.StrEnum):
    POLLING = "polling"
    WEBHOOK = "webhook"


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One change of one QuickBooks object as a source saw it, before it is fanned out to instances.

    `date` is RFC 3339 UTC truncated to whole seconds (`2026-11-27T13:04:47Z`), so that a webhook
    and a poll of the same change agree on it.
    """

    realm_id: str
    entity: str
    object_id: str
    event_type: EventType
    date: str
    source: Source
    raw: Any
    operation: str | None = None
    deleted_id: str | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A Change addressed to one instance: the unit the outbox stores and the senders deliver."""

    event_id: str
    instance: str
    object_type: str
    change: Change

    @property
    def object_key(self) -> str:
        """Events sharing this key are delivered in the order they were accepted."""
        return f"{self.instance}\x1f{self.object_type}\x1f{self.change.object_id}"


def event_id(instance: str, change: Change) -> str:
    """Deterministic id: the same change seen twice (retry, webhook and poll) gets the same id."""
    parts = (
        instance,
        change.realm_id,
        change.entity,
        change.object_id,
        change.event_type.value,
        change.date,
    )
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return "evt_" + digest[:32]


def make_event(instance: str, object_type: str, change: Change) -> Event:
    return Event(
        event_id=event_id(instance, change),
        instance=instance,
        object_type=object_type,
        change=change,
    )
