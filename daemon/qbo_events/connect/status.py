"""Pure: which company each instance serves once connections are counted in (the effective
config), and how its connection reads in `status`, `/status` and `check`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from qbo_events.config import Config, Instance
from qbo_events.connect.store import CONNECTED, DISCONNECTED, NEEDS_REAUTHORIZATION, ConnectionRow

# How a connection reads, in /status's `connection.state` and the tables.
STATE_CONNECTED: Final = "connected"
STATE_NEEDS_REAUTHORIZATION: Final = "needs re-authorization"
STATE_WAITING: Final = "waiting for connect"
STATE_CONFIGURED: Final = "configured"  # a realm_id and refresh_token from the config alone


def serving_realm(instance: Instance, row: ConnectionRow | None) -> str:
    """The company the instance serves or may reconnect: the configured realm, else the one a
    connect taught it (until a disconnect); "" while it waits for its first company."""
    if instance.realm_id:
        return instance.realm_id
    if row is not None and row.status != DISCONNECTED:
        return row.realm_id
    return ""


def effective(config: Config, rows: Mapping[str, ConnectionRow]) -> Config:
    """`config` with each instance's realm as the connections make it: a learned realm filled
    in, and none at all for a disconnected instance, which then polls nothing."""
    instances = []
    for inst in config.instances:
        row = rows.get(inst.name)
        realm = "" if row is not None and row.status == DISCONNECTED else serving_realm(inst, row)
        instances.append(inst if realm == inst.realm_id else _with_realm(inst, realm))
    return msgspec.structs.replace(config, instances=instances)


def _with_realm(instance: Instance, realm: str) -> Instance:
    return msgspec.structs.replace(instance, realm_id=realm)


def describe(instance: Instance, row: ConnectionRow | None, refused: bool) -> dict[str, Any]:
    """The `connection` object of an instance in /status."""
    if row is None:
        # Without a row, a refusal means no token at all: an invalid_grant writes one (`lost`).
        state = STATE_CONFIGURED if instance.realm_id and not refused else STATE_WAITING
    elif row.status == CONNECTED and not refused:
        state = STATE_CONNECTED
    elif row.status == NEEDS_REAUTHORIZATION or (row.status == CONNECTED and refused):
        state = STATE_NEEDS_REAUTHORIZATION
    else:
        state = STATE_WAITING
    result: dict[str, Any] = {"state": state}
    realm = serving_realm(instance, row)
    if row is not None and row.status == DISCONNECTED:
        realm = instance.realm_id
    if realm:
        result["realm_id"] = realm
    if row is not None and row.status != DISCONNECTED and row.realm_id == realm:
        if row.company_name:
            result["company_name"] = row.company_name
        if row.connected_at:
            result["connected_at"] = _iso(row.connected_at)
    if row is not None:
        result["changed_at"] = _iso(row.updated_at)
    return result


def line(connection: Mapping[str, Any]) -> str:
    """One line for the tables: `connected to Acme (realm 123) since 2026-...`."""
    state = str(connection.get("state", "?"))
    realm = connection.get("realm_id")
    name = connection.get("company_name")
    company = f"{name} (realm {realm})" if name and realm else f"realm {realm}" if realm else ""
    if state == STATE_CONNECTED:
        text = f"connected to {company or 'a company'}"
        since = connection.get("connected_at")
        return f"{text} since {since}" if since else text
    if state == STATE_CONFIGURED:
        return f"configured for {company}"
    if state == STATE_NEEDS_REAUTHORIZATION:
        return f"needs re-authorization ({company})" if company else state
    since = connection.get("changed_at")
    return f"{state} since {since}" if since else state


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
