"""The admin API's request and response bodies; the OpenAPI document is generated from them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from qbo_events.activity import InstanceActivity
from qbo_events.deliveries import Detail, Item
from qbo_events.quarantine import Quarantined

EventId = Annotated[str, Meta(min_length=1, max_length=200)]


class Error(msgspec.Struct, frozen=True):
    error: str


class InstancesView(msgspec.Struct, frozen=True):
    """Per instance name: its state, connection, polling (lag and last error per resource),
    API calls and delivery counts, as /status shows them."""

    instances: dict[str, Any]


class Activity(msgspec.Struct, frozen=True):
    """Per instance, each minute from `since` to `until` that had events or failed attempts
    (`minute` seconds long), and its undelivered and dead counts now."""

    hours: int
    since: float
    until: float
    minute: int
    instances: dict[str, InstanceActivity]


class DeliveryList(msgspec.Struct, frozen=True):
    deliveries: list[Item]


class DeliveryCopies(msgspec.Struct, frozen=True):
    copies: list[Detail]


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Delivered events of one instance to send again: by time (since, until: RFC 3339 or a span
    back from now like 1h) or by event id, optionally one object (TYPE/ID)."""

    instance: Annotated[str, Meta(min_length=1)]
    since: str | None = None
    until: str | None = None
    event_ids: Annotated[list[EventId], Meta(max_length=1000)] = []
    object: str | None = None
    dry_run: bool = False


class ReplayResult(msgspec.Struct, frozen=True):
    queued: int
    dry_run: bool


class RetryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Dead letters to queue again: all, one instance's, or one event's."""

    instance: str | None = None
    event_id: str | None = None


class RetryResult(msgspec.Struct, frozen=True):
    requeued: int


class QuarantineList(msgspec.Struct, frozen=True):
    quarantined: list[Quarantined]
    total: int


class QuarantineRetryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One quarantined body to parse again, or all of them (id left out)."""

    id: Annotated[int, Meta(ge=1, le=2**63 - 1)] | None = None


class ConnectLinkRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long the link lasts: 90s, 15m, 1h (default), 2d."""

    valid: str = "1h"


class ConnectLink(msgspec.Struct, frozen=True):
    url: str
    expires_at: float


class ResumeResult(msgspec.Struct, frozen=True):
    """False when the endpoint was healthy already."""

    resumed: bool


class ResyncRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exactly one of `since` (RFC 3339 or a span back like 2d) and `full`."""

    resources: list[str] | None = None
    since: str | None = None
    full: bool = False


class ResyncView(msgspec.Struct, frozen=True):
    """id, state, resources_done, resources_total, objects, since, last_error."""

    resync: dict[str, Any]
