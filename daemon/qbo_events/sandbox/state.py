"""Everything one running sandbox holds, built from its options; the handlers share it."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from . import catalog
from .auth import Tokens
from .calls import CallLog
from .company import ChangeLog, ChangeRecord, Company
from .consent import Authorization, ConsentSwitch, Log, Revocation
from .faults import FaultSwitches, RateLimiter
from .generator import ChangeGenerator
from .options import SandboxOptions
from .webhooks import WebhookEmitter

_ENTITY_BY_LOWER: Final = {e.lower(): e for e in catalog.ENTITIES}


@dataclass
class State:
    options: SandboxOptions
    log: ChangeLog
    companies: dict[str, Company]
    tokens: Tokens
    faults: FaultSwitches
    limiter: RateLimiter
    generator: ChangeGenerator
    rng: random.Random
    emitter: WebhookEmitter | None = None
    requests: Counter[str] = field(default_factory=Counter)
    calls: CallLog = field(default_factory=CallLog)
    consent: ConsentSwitch = field(default_factory=ConsentSwitch)
    authorizations: Log[Authorization] = field(default_factory=lambda: Log(Authorization))
    revocations: Log[Revocation] = field(default_factory=lambda: Log(Revocation))

    @classmethod
    def build(cls, options: SandboxOptions) -> State:
        rng = random.Random(options.random_seed)
        emitter = None
        if options.webhook_url:
            emitter = WebhookEmitter(
                options.webhook_url,
                fmt=options.webhook_format,
                verifier_token=options.verifier_token,
                client_id=options.client_id,
                retry_scale=options.webhook_retry_scale,
                batch_delay=options.webhook_batch_delay,
                timeout=options.webhook_timeout,
            )
        companies: dict[str, Company] = {}
        tokens = Tokens(
            client_id=options.client_id,
            client_secret=options.client_secret,
            access_lifetime=options.access_token_lifetime,
            refresh_lifetime=options.refresh_token_lifetime,
            grace=options.refresh_grace,
            rotate=options.rotate_refresh_tokens,
            hard_lifetime=options.refresh_hard_expiry,
        )
        for realm_id, token in options.first_refresh_tokens().items():
            tokens.add_refresh_token(realm_id, token)
        if options.realm_ids and options.auth_code:
            tokens.add_auth_code(options.realm_ids[0], options.auth_code)
        state = cls(
            options=options,
            log=ChangeLog(),
            companies=companies,
            tokens=tokens,
            faults=FaultSwitches(
                throttle=options.throttle,
                errors=options.errors,
                error_status=options.error_status,
                slow=options.slow,
            ),
            limiter=RateLimiter(options.max_per_second, options.max_per_minute),
            generator=ChangeGenerator(lambda: list(companies.values()), rng, options.rate),
            rng=rng,
            emitter=emitter,
        )
        for realm_id in options.realm_ids:
            state.add_company(realm_id)
        return state

    def company(self, realm_id: str | None) -> Company:
        """The realm's company (the first when None); KeyError names an unknown realm."""
        if realm_id is None:
            return next(iter(self.companies.values()))
        if realm_id not in self.companies:
            raise KeyError(f"unknown realm {realm_id!r}; known: {', '.join(self.companies)}")
        return self.companies[realm_id]

    def add_company(self, realm_id: str) -> Company:
        """A company the sandbox did not simulate yet (a user connecting another company),
        seeded as the first ones were; the existing one when it is known."""
        if realm_id not in self.companies:
            company = Company(
                realm_id,
                self.log,
                rng=self.rng,
                notify=self.emitter.enqueue if self.emitter is not None else None,
            )
            company.seed(self.options.seed)
            self.companies[realm_id] = company
        return self.companies[realm_id]

    def make_changes(
        self,
        realm_id: str | None,
        entity: str,
        operation: str,
        count: int = 1,
        object_id: str | None = None,
    ) -> list[ChangeRecord]:
        """Apply `count` changes now; ValueError when the entity cannot take the operation.

        The entity and the operation are named in any case (`invoice`, `create`); an unknown
        operation is refused with the accepted names."""
        company = self.company(realm_id)
        known = {name.lower(): name for name in catalog.OPERATIONS}
        if operation.lower() not in known:
            accepted = ", ".join(catalog.OPERATIONS)
            raise ValueError(f"unknown operation {operation!r}; accepted: {accepted}")
        operation = known[operation.lower()]
        entity = _ENTITY_BY_LOWER.get(entity.lower(), entity)
        made: list[ChangeRecord] = []
        for _ in range(count):
            made.extend(company.apply(entity, operation, object_id))
        return made

    def connect(self, realm_id: str | None) -> dict[str, str]:
        """A fresh connection to a realm: a new refresh-token chain and a one-time code."""
        company = self.company(realm_id)
        return {
            "realm_id": company.realm_id,
            "refresh_token": self.tokens.add_refresh_token(company.realm_id),
            "auth_code": self.tokens.add_auth_code(company.realm_id),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "calls": self.calls.by_kind(),
            "calls_by_realm": self.calls.by_realm(),
            "throttled_by_limits": self.limiter.refused,
            "token_refreshes": self.tokens.refreshes,
            "refresh_tokens": self.tokens.current_refresh_tokens(),
            "refresh_token_hard_expires_in": self.tokens.hard_expires_in(),
            "authorizations": self.authorizations.count,
            "revocations": self.revocations.count,
            "faults": self.faults.state(),
            "limits": {
                "max_per_second": self.limiter.per_second,
                "max_per_minute": self.limiter.per_minute,
            },
            "changes": len(self.log),
            "generator": {"rate": self.generator.rate, "made": self.generator.made},
            "webhooks": self.emitter.stats() if self.emitter is not None else None,
            "objects": {realm: c.counts() for realm, c in self.companies.items()},
        }


STATE = web.AppKey("state", State)
REALM = web.RequestKey("realm_id", str)  # set on a token request whose grant names a realm
