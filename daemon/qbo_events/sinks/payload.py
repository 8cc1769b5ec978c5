"""Pure: the body of one delivery, in the Open Connectors shape or as a structured CloudEvent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from ..events import Event

ELEMENT_KEY: Final = "quickbooks"
FORMATS: Final = ("open-connectors", "cloudevents")


def message(event: Event, *, instance_name: str, tags: Sequence[str]) -> dict[str, Any]:
    """The Open Connectors `message` object of one event."""
    change = event.change
    item: dict[str, Any] = {
        "eventType": change.event_type.value,
        "objectType": event.object_type,
        "objectId": change.object_id,
        "elementKey": ELEMENT_KEY,
        "date": change.date,
        "entity": change.entity,
    }
    if change.operation is not None:
        item["operation"] = change.operation
    if change.deleted_id is not None:
        item["deletedId"] = change.deleted_id
    return {
        "eventId": event.event_id,
        "instanceId": instance_name,
        "instanceName": instance_name,
        "instanceTags": list(tags),
        "elementKey": ELEMENT_KEY,
        "companyId": change.realm_id,
        "realmId": change.realm_id,
        "source": change.source.value,
        "events": [item],
        "raw": change.raw,
    }


def render(event: Event, *, instance_name: str, tags: Sequence[str], fmt: str) -> tuple[bytes, str]:
    """(body, Content-Type) of the delivery of `event` in `delivery.format` `fmt`."""
    body = message(event, instance_name=instance_name, tags=tags)
    if fmt == "open-connectors":
        return orjson.dumps({"message": body}), "application/json"
    if fmt == "cloudevents":
        cloudevent = {
            "specversion": "1.0",
            "id": event.event_id,
            "source": f"qbo-events/{instance_name}",
            "type": f"com.quickbooks.{event.object_type}.{event.change.event_type.value.lower()}",
            "subject": event.change.object_id,
            "time": event.change.date,
            "datacontenttype": "application/json",
            "data": body,
        }
        return orjson.dumps(cloudevent), "application/cloudevents+json"
    raise ValueError(f"unknown delivery format {fmt!r}; known: {', '.join(FORMATS)}")
