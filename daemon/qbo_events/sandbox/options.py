"""The sandbox's settings, one frozen value shared by the Python API and `qbo-events sandbox`."""

from __future__ import annotations

import msgspec

from .auth import HARD_LIFETIME
from .webhooks import WebhookFormat


class SandboxOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port; Sandbox.port tells which
    realm_ids: tuple[str, ...] = ("9341453908128517",)
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    # The first valid refresh token of the first realm; realm N > 1 gets "<token>-<realm id>".
    refresh_token: str = "sandbox-refresh-token"
    auth_code: str = "sandbox-auth-code"  # accepted once, for the first realm
    verifier_token: str = "sandbox-verifier-token"
    webhook_url: str = ""  # none: no webhooks are sent
    webhook_format: WebhookFormat = "legacy"
    seed: int = 10  # objects per entity made before serving, all changed more than a day ago
    rate: float = 0.0  # changes per second made by the simulated companies
    random_seed: int | None = None  # fixes the objects and changes made, for repeatable runs
    access_token_lifetime: float = 3600.0
    refresh_token_lifetime: int = 8726400  # x_refresh_token_expires_in
    rotate_refresh_tokens: bool = True
    refresh_grace: float = 86400.0  # how long a superseded refresh token works if unused
    refresh_hard_expiry: int = HARD_LIFETIME  # seconds from a grant to its chain's hard expiry
    # The redirect URIs registered for the app; none: any absolute http(s) URI is taken.
    redirect_uris: tuple[str, ...] = ()
    max_per_second: int = 10  # per realm, as QuickBooks limits
    max_per_minute: int = 500
    cdc_max_objects: int = 1000
    webhook_retry_scale: float = 1.0  # multiplies Intuit's retry schedule (tests: 0.01)
    webhook_batch_delay: float = 0.2
    webhook_timeout: float = 3.0
    # Faults on from the start; the control API changes them later.
    throttle: int = 0
    errors: int = 0
    error_status: int = 503
    slow: float = 0.0

    def first_refresh_tokens(self) -> dict[str, str]:
        return {
            realm: self.refresh_token if index == 0 else f"{self.refresh_token}-{realm}"
            for index, realm in enumerate(self.realm_ids)
        }
