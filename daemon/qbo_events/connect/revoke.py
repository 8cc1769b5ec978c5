"""Revoking a grant at Intuit's revoke endpoint (`qbo-events disconnect`)."""

from __future__ import annotations

import base64
from typing import Final

import aiohttp

from qbo_events.config import Config
from qbo_events.connect.links import revoke_endpoint
from qbo_events.errors import QuickBooksUnavailable

_TIMEOUT: Final = aiohttp.ClientTimeout(total=30)


async def revoke(config: Config, refresh_token: str) -> bool:
    """True when QuickBooks revoked the grant now, False when it answered 400 (a grant already
    revoked, disconnected in QuickBooks or expired: nothing left to revoke). Raises
    QuickBooksUnavailable for anything else, when the grant may still be alive."""
    qb = config.quickbooks
    pair = f"{qb.client_id}:{qb.client_secret}".encode()
    url = revoke_endpoint(config)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url,
                json={"token": refresh_token},
                headers={
                    "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
                    "Accept": "application/json",
                },
                allow_redirects=False,
                timeout=_TIMEOUT,
            ) as response,
        ):
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QuickBooksUnavailable(f"revoke endpoint unreachable: {type(exc).__name__}") from None
    if status == 200:
        return True
    if status == 400:
        return False
    raise QuickBooksUnavailable(f"revoke endpoint answered HTTP {status}", status=status)
