"""Connecting a company: trade a consent code for tokens, prove they open the instance's realm."""

from __future__ import annotations

import aiohttp
import msgspec

from qbo_events.config import Config, Instance
from qbo_events.errors import (
    NeedsReauthorization,
    QboEventsError,
    QuickBooksAuthError,
    QuickBooksError,
    QuickBooksFault,
)
from qbo_events.quickbooks.client import QuickBooksClient
from qbo_events.quickbooks.oauth import (
    TokenManager,
    Tokens,
    api_base_for,
    exchange_code,
    token_url_for,
)


class WrongCompany(QboEventsError):
    """The tokens QuickBooks issued do not open the instance's company."""


class Authorized(msgspec.Struct, frozen=True):
    tokens: Tokens
    # Empty when QuickBooks confirmed the realm; else why it could not, for the operator.
    unconfirmed: str = ""
    company_name: str = ""  # CompanyInfo's CompanyName, when it was read


class _Held:
    """A token store in memory: nothing reaches the state directory before the check passes."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def load_tokens(self, instance: str) -> Tokens | None:
        return self.tokens

    async def save_tokens(self, instance: str, tokens: Tokens) -> None:
        self.tokens = tokens


async def authorize(
    config: Config, instance: Instance, *, code: str, redirect_uri: str, realm_given: bool
) -> Authorized:
    """Exchange `code`, then read the instance realm's CompanyInfo with the new access token.

    The token answer names no company, and a consent given while signed in to another one yields
    tokens every poll would see refused. A 401 or 403 on that read raises WrongCompany. When
    QuickBooks cannot answer at all, the tokens are kept only if the redirect's realmId was given
    (`realm_given`, already compared with the instance's), since the code cannot be used again.
    """
    qb = config.quickbooks
    token_url = token_url_for(qb.token_url)
    async with aiohttp.ClientSession() as http:
        tokens = await exchange_code(
            http,
            token_url=token_url,
            client_id=qb.client_id,
            client_secret=qb.client_secret,
            code=code,
            redirect_uri=redirect_uri,
        )
        held = _Held(tokens)
        manager = TokenManager(
            instance=instance.name,
            http=http,
            token_url=token_url,
            client_id=qb.client_id,
            client_secret=qb.client_secret,
            store=held,
            initial_refresh_token=tokens.refresh_token,
        )
        client = QuickBooksClient(
            http=http,
            base_url=api_base_for(qb.environment, qb.api_base_url),
            minor_version=qb.minor_version,
            requests_per_minute=qb.requests_per_minute,
            max_concurrent_requests=qb.max_concurrent_requests,
            # One person waits at a terminal: a throttled realm is reported, not waited out.
            throttle_retries=0,
        )
        realm = instance.realm_id
        try:
            answer = await client.read(realm, manager, "CompanyInfo", realm)
        except (QuickBooksAuthError, NeedsReauthorization, QuickBooksFault) as exc:
            if isinstance(exc, QuickBooksFault) and exc.status not in (401, 403):
                raise
            raise WrongCompany(
                f"the new tokens are for another company: QuickBooks refused them on realm "
                f"{realm} of instance {instance.name} (HTTP {exc.status}); nothing was stored. "
                f"Sign in to the company with realm ID {realm} and authorize again with the "
                "new code"
            ) from None
        except QuickBooksError as exc:
            if not realm_given:
                raise WrongCompany(
                    f"cannot confirm that the new tokens are for realm {realm} of instance "
                    f"{instance.name} ({exc}); nothing was stored. Authorize again with "
                    "--realm-id (the realmId of the redirect), or when QuickBooks answers"
                ) from None
            return Authorized(held.tokens, unconfirmed=str(exc))
    info = answer.get("CompanyInfo")
    name = info.get("CompanyName") if isinstance(info, dict) else None
    return Authorized(held.tokens, company_name=name if isinstance(name, str) else "")
