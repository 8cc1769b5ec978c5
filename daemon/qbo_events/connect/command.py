"""The `connect` and `disconnect` commands: what they do, apart from parsing their arguments."""

from __future__ import annotations

import time
from collections.abc import Callable

from qbo_events.app import outbox_path
from qbo_events.config import Config, Instance
from qbo_events.connect.links import (
    connect_link,
    new_token,
    public_base,
    token_hash,
)
from qbo_events.connect.local import connect_locally
from qbo_events.connect.revoke import revoke
from qbo_events.connect.status import serving_realm
from qbo_events.connect.store import ConnectionStore
from qbo_events.errors import ConfigError, QuickBooksUnavailable
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.oauth import Tokens


def needs_client(config: Config) -> None:
    qb = config.quickbooks
    missing = [key for key in ("client_id", "client_secret") if not getattr(qb, key)]
    if missing:
        raise ConfigError([f"quickbooks.{key}: required to connect a company" for key in missing])


async def mint_link(config: Config, instance: Instance, valid: float) -> str:
    """A single-use link that starts the consent flow for `instance`, written straight into
    the state directory's database (whether or not the daemon runs)."""
    if not public_base(config):
        raise ConfigError(
            [
                "http.public_base_url: not set, so no link can point at the webhook listener;"
                " set it (how browsers reach the listener) or use --local"
            ]
        )
    needs_client(config)
    async with Outbox(outbox_path(config)) as outbox:
        return await add_link(outbox, config, instance, valid)


async def add_link(outbox: Outbox, config: Config, instance: Instance, valid: float) -> str:
    """Store a new single-use link for `instance` in `outbox` and return it (the command's
    and the admin API's way to make one)."""
    token = new_token()
    await ConnectionStore(outbox).add_link(token_hash(token), instance.name, time.time(), valid)
    return connect_link(config, token)


async def local(
    config: Config,
    instance: Instance,
    *,
    port: int,
    valid: float,
    say: Callable[[str], None],
) -> str:
    needs_client(config)
    async with Outbox(outbox_path(config)) as outbox:
        done = await connect_locally(outbox, config, instance, port=port, valid=valid, say=say)
    company = done.company_name or "(no name)"
    return (
        f"instance {done.instance} {done.status.value}: {company}, realm {done.realm_id}; "
        "a running daemon takes it up within seconds"
    )


async def disconnect(config: Config, instance: Instance, say: Callable[[str], None]) -> None:
    """Stop the instance (a running daemon notices), revoke its grant, forget its tokens.
    When the revoke endpoint cannot be reached, the tokens stay so that a rerun can revoke."""
    needs_client(config)
    async with Outbox(outbox_path(config)) as outbox:
        store = ConnectionStore(outbox)
        row = store.connections().get(instance.name)
        realm = serving_realm(instance, row)
        stored = await outbox.load_tokens(instance.name)
        tokens = stored or Tokens(refresh_token=instance.refresh_token)
        await store.disconnect(instance.name, realm, time.time(), forget_tokens=False)
        if tokens.refresh_token:
            try:
                revoked = await revoke(config, tokens.refresh_token)
            except QuickBooksUnavailable as exc:
                raise QuickBooksUnavailable(
                    f"{exc}; {instance.name} is stopped but its tokens are kept: run"
                    " `qbo-events disconnect` again to revoke them"
                ) from None
            if revoked:
                say(f"revoked the grant of {instance.name} at QuickBooks")
            else:
                say(
                    f"QuickBooks no longer knew the grant of {instance.name} (revoked, "
                    "disconnected or expired already); forgetting it here all the same"
                )
        else:
            say(f"no tokens stored for {instance.name}; nothing to revoke")
        await store.disconnect(instance.name, realm, time.time(), forget_tokens=True)
    where = f"realm {realm}" if realm else "its company"
    say(
        f"disconnected {instance.name} from {where}; it waits for a new connect"
        " (`qbo-events connect`)"
    )
