"""The connect flow's two steps: start (mint a `state`, build the consent URL) and finish (check
the redirect, exchange the code, confirm the company, store it). Used by the webhook listener's
pages and by `connect --local` alike."""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec
import structlog

from qbo_events.config import Config
from qbo_events.connect.announce import announce, occasion_of
from qbo_events.connect.links import (
    STATE_VALID,
    Verdict,
    authorization_url,
    new_token,
    token_hash,
)
from qbo_events.connect.status import serving_realm
from qbo_events.connect.store import ConnectionStore, StateGrant
from qbo_events.errors import OutboxError, QboEventsError, QuickBooksError
from qbo_events.events import ConnectionStatus, Event
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.authorize import WrongCompany, authorize

log = structlog.get_logger("qbo_events.connect")


class Refused(QboEventsError):
    """A redirect (or link) that connects nothing; `status` and the message make its page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connected(msgspec.Struct, frozen=True):
    instance: str
    realm_id: str
    company_name: str
    status: ConnectionStatus
    event: Event | None  # the connection event accepted, None when they are off


async def start(
    store: ConnectionStore,
    config: Config,
    instance: str,
    *,
    redirect_uri: str,
    realm_id: str = "",
    now: float | None = None,
) -> str:
    """Mint a `state` for `instance` (bound to `realm_id` when given) and return the URL of
    the consent page that comes back with it."""
    state = new_token()
    at = time.time() if now is None else now
    grant = StateGrant(instance=instance, realm_id=realm_id, redirect_uri=redirect_uri)
    await store.add_state(token_hash(state), grant, at, STATE_VALID)
    return authorization_url(config, redirect_uri=redirect_uri, state=state)


_STATE_PROBLEMS = {
    Verdict.UNKNOWN: "is not one this service issued",
    Verdict.USED: "has been used already",
    Verdict.EXPIRED: "has expired",
}


async def finish(
    outbox: Outbox, store: ConnectionStore, config: Config, query: Mapping[str, str]
) -> Connected:
    """Check the redirect's `state`, `error`, `code` and `realmId`; connect the company.

    Raises Refused (nothing stored, the state spent) for every reason to connect nothing.
    """
    now = time.time()
    state = query.get("state", "")
    if not state:
        log.warning("connect redirect without a state")
        raise Refused(400, "This link carries no state; start again from a new connect link.")
    verdict, grant = await store.use_state(token_hash(state), now)
    if grant is None:
        log.warning("connect redirect refused: bad state", verdict=verdict.value)
        raise Refused(
            400,
            f"This authorization {_STATE_PROBLEMS[verdict]}; start again from a new connect link.",
        )
    instance = config.instance(grant.instance)
    if instance is None:
        raise Refused(400, f"Instance {grant.instance} is no longer configured.")
    error = query.get("error", "")
    if error:
        log.warning("connect declined at QuickBooks", instance=instance.name, error=error)
        raise Refused(
            400,
            f"QuickBooks did not authorize the connection of {instance.name} ({error}); "
            "nothing was stored.",
        )
    code, realm = query.get("code", ""), query.get("realmId", "")
    if not code or not realm:
        log.warning("connect redirect without a code or realmId", instance=instance.name)
        raise Refused(400, "The redirect carries no code or no realmId; nothing was stored.")
    row = store.connections().get(instance.name)
    wanted = grant.realm_id or serving_realm(instance, row)
    if wanted and realm != wanted:
        log.warning(
            "connect refused: another company",
            instance=instance.name,
            realm_id=realm,
            serves=wanted,
        )
        raise Refused(
            403,
            f"Instance {instance.name} serves the company with realm ID {wanted}, not {realm}; "
            "nothing was stored. Sign in to that company and use a new connect link.",
        )
    try:
        done = await authorize(
            config,
            msgspec.structs.replace(instance, realm_id=realm),
            code=code,
            redirect_uri=grant.redirect_uri,
            realm_given=True,
        )
    except WrongCompany as exc:
        log.warning("connect refused by QuickBooks", instance=instance.name, problem=str(exc))
        raise Refused(403, str(exc)) from None
    except QuickBooksError as exc:
        log.error("connect failed at QuickBooks", instance=instance.name, problem=str(exc))
        raise Refused(502, f"QuickBooks could not complete the connection: {exc}") from None
    status, connected = await store.connect(
        instance.name, realm, done.company_name, done.tokens, time.time()
    )
    log.info(
        "company connected",
        instance=instance.name,
        realm_id=realm,
        company=done.company_name,
        status=status.value,
    )
    event = None
    try:
        event = await announce(
            outbox,
            store,
            config,
            instance,
            status,
            realm_id=realm,
            occasion=occasion_of(connected.connected_at),
            company_name=done.company_name or None,
            now=connected.connected_at,
        )
    except OutboxError as exc:
        log.error("connection event not stored", instance=instance.name, problem=str(exc))
    return Connected(instance.name, realm, done.company_name, status, event)
