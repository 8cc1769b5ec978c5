"""The immutable values that cross stages: a Change a source saw, a Connection's new status, a
Resync's end, and the Event per instance that carries one of them."""

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


class ConnectionStatus(enum.StrEnum):
    CONNECTED = "connected"  # connected for the first time
    RESTORED = "restored"  # connected again after a lost grant or a disconnect
    NEEDS_REAUTHORIZATION = "needs_reauthorization"  # the grant died: invalid_grant
    EXPIRING = "expiring"  # the refresh token's hard expiry is near


class Connection(msgspec.Struct, frozen=True, kw_only=True):
    """A new status of an instance's connection to its company, as its receiver is told it."""

    status: ConnectionStatus
    realm_id: str
    date: str  # when the status came about, RFC 3339 UTC, whole seconds
    company_name: str | None = None
    connect_url: str | None = None  # a fresh single-use connect link, when one could be made
    # What makes this status's event id unique: the connection's connected_at for the first
    # three statuses, the day for `expiring`.
    occasion: str = ""


class ResyncStatus(enum.StrEnum):
    COMPLETED = "completed"  # every resource read, every event found delivered (or dead)
    CANCELLED = "cancelled"  # `resync --cancel`: what was found so far was delivered


class Resync(msgspec.Struct, frozen=True, kw_only=True):
    """The end of a resync job, as its instance's receiver is told it."""

    status: ResyncStatus
    resync_id: str
    realm_id: str
    resources: tuple[str, ...]
    objects: int  # the events the job delivered
    started: str  # RFC 3339 UTC, whole seconds
    finished: str
    since: str | None = None  # None: `--full`


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A Change (or a Connection's status, or a Resync's end) addressed to one instance: the
    unit the outbox stores and the senders deliver. Exactly one of `change`, `connection` and
    `resync` is set."""

    event_id: str
    instance: str
    object_type: str
    change: Change | None = None
    connection: Connection | None = None
    resync: Resync | None = None

    @property
    def object_key(self) -> str:
        """Events sharing this key are delivered in the order they were accepted."""
        if self.resync is not None:
            return f"{self.instance}\x1eresync"
        if self.change is None:
            # \x1e never occurs in an instance name, so no object's key is ever this one.
            return f"{self.instance}\x1econnection"
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


CONNECTION_OBJECT_TYPE = "connection"


def connection_event(instance: str, connection: Connection) -> Event:
    """The event telling `instance`'s receiver of a connection status; the same status of the
    same connection (or day, for `expiring`) always gets the same id."""
    parts = ("CONNECTION", instance, connection.realm_id, connection.status, connection.occasion)
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return Event(
        event_id="evt_" + digest[:32],
        instance=instance,
        object_type=CONNECTION_OBJECT_TYPE,
        connection=connection,
    )


def make_event(instance: str, object_type: str, change: Change) -> Event:
    return Event(
        event_id=event_id(instance, change),
        instance=instance,
        object_type=object_type,
        change=change,
    )


RESYNC_OBJECT_TYPE = "resync"


def resync_event(instance: str, resync: Resync) -> Event:
    """The event that ends resync job `resync.resync_id`: one per job and outcome."""
    parts = ("RESYNC", instance, resync.resync_id, resync.status)
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return Event(
        event_id="evt_" + digest[:32],
        instance=instance,
        object_type=RESYNC_OBJECT_TYPE,
        resync=resync,
    )
