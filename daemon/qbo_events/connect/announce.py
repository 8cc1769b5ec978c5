"""Connection events: an instance's new connection status, put in the outbox for its receiver."""

from __future__ import annotations

import time

import structlog

from qbo_events.config import Config, Instance
from qbo_events.connect.links import (
    EVENT_LINK_VALID,
    connect_link,
    new_token,
    public_base,
    token_hash,
)
from qbo_events.connect.store import ConnectionStore
from qbo_events.events import Connection, ConnectionStatus, Event, connection_event
from qbo_events.outbox import Outbox

log = structlog.get_logger("qbo_events.connect")

# The statuses that ask the operator to act, and so carry a fresh connect link.
_ACTIONABLE = (ConnectionStatus.NEEDS_REAUTHORIZATION, ConnectionStatus.EXPIRING)


def occasion_of(connected_at: float) -> str:
    """What tells one connection's events from the next one's: when it was made."""
    return f"{connected_at:.3f}"


async def announce(
    outbox: Outbox,
    store: ConnectionStore,
    config: Config,
    instance: Instance,
    status: ConnectionStatus,
    *,
    realm_id: str,
    occasion: str,
    company_name: str | None = None,
    now: float | None = None,
) -> Event | None:
    """Accept the event of `status` for `instance` (None when its connection events are off).

    `occasion` makes the event id: the same status of the same occasion is one event, however
    often it is announced (connected_at for a connection's statuses, the day for `expiring`).
    Raises OutboxError when the outbox cannot take it.
    """
    notification = instance.event.notification
    if not (notification.enabled and notification.connection_events):
        return None
    at = time.time() if now is None else now
    connect_url = None
    if status in _ACTIONABLE and public_base(config):
        token = new_token()
        await store.add_link(token_hash(token), instance.name, at, EVENT_LINK_VALID)
        connect_url = connect_link(config, token)
    event = connection_event(
        instance.name,
        Connection(
            status=status,
            realm_id=realm_id,
            date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            company_name=company_name,
            connect_url=connect_url,
            occasion=occasion,
        ),
    )
    new = await outbox.accept([event])
    log.info(
        "connection event",
        instance=instance.name,
        status=status.value,
        realm_id=realm_id,
        event_id=event.event_id,
        duplicate=not new,
    )
    return event
