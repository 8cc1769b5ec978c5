"""The polling loops, one per (instance, resource), started and stopped as the config says."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from qbo_events import health, qbtime
from qbo_events.config import Config, Instance
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.budget import NO_STRETCH, BudgetKeeper, Stretch
from qbo_events.quickbooks.client import QuickBooksClient
from qbo_events.quickbooks.meter import CallMeter
from qbo_events.quickbooks.oauth import TokenManager, api_base_for, token_url_for
from qbo_events.quickbooks.resources import BY_NAME
from qbo_events.sources.coalesce import CdcCoalescer
from qbo_events.sources.poller import LoopState, ResourceLoop

log = structlog.get_logger("qbo_events.pollers")

# How long polls under way get to finish when the daemon stops.
STOP_GRACE = 1.0
# Off only to measure what one CDC request per (instance, resource) costs (bench/poll.py).
COALESCE = os.environ.get("QBO_EVENTS_COALESCE", "1") != "0"


class _Stopped(Exception):
    """Raised inside the loops' group to cancel the polls still running at a stop."""


class Pollers:
    """Owns the QuickBooks client, one TokenManager per polling instance, and the loops."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        on_accepted: Callable[[str], None],
        meter: CallMeter | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._on_refused = on_refused  # an instance's grant died (invalid_grant)
        self._meter = meter
        self._count_call = meter.count if meter is not None else None
        # Plans the monthly budget; its factors reach the loops through `_restretch`.
        self.budget = (
            BudgetKeeper(meter, self._restretch, on_change=self._show_stretch)
            if meter is not None
            else None
        )
        self._stretch = NO_STRETCH
        self._http = http
        self._metrics = metrics
        self._on_accepted = on_accepted
        self._client: QuickBooksClient | None = None
        self._client_key: tuple[Any, ...] = ()
        self._tokens: dict[str, TokenManager] = {}
        self._token_key: dict[str, tuple[Any, ...]] = {}
        self._coalescers: dict[str, CdcCoalescer] = {}
        self._paused: set[str] = set()  # instances whose refusal has been logged
        self._loops: dict[tuple[str, str], ResourceLoop] = {}
        self._group: asyncio.TaskGroup | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._config: Config | None = None

    async def run(self, config: Config, stop: asyncio.Event) -> None:
        """Run the loops of `config` (and of later `apply` calls) until `stop`."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self.apply(config)
                if self.budget is not None:
                    group.create_task(self.budget.run(), name="budget")
                await stop.wait()
                if self.budget is not None:
                    self.budget.halt()
                for loop in self._loops.values():
                    loop.halt()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_GRACE):
                        await self._idle.wait()
                if not self._idle.is_set():
                    # A poll that is cancelled commits nothing: its events and its cursor go
                    # into the outbox together or not at all. So a stop need not wait for it.
                    raise _Stopped
        except* _Stopped:
            pass
        finally:
            self._group = None

    def apply(self, config: Config) -> None:
        """Start what is new, stop what is gone, hand changed settings to running loops."""
        self._config = config
        if self._group is None:
            return
        qb = config.quickbooks
        if self._meter is not None and self.budget is not None:
            self._meter.budget = qb.monthly_call_budget
            self.budget.configure(config)
            # Before the loops start: a restart in a stretched month must not poll at once.
            self.budget.replan()
        client_key = (
            api_base_for(qb.environment, qb.api_base_url),
            qb.minor_version,
            qb.requests_per_minute,
            qb.max_concurrent_requests,
        )
        if self._client is None or client_key != self._client_key:
            base, minor, per_minute, concurrent = client_key
            self._client = QuickBooksClient(
                http=self._http,
                base_url=base,
                minor_version=minor,
                requests_per_minute=per_minute,
                max_concurrent_requests=concurrent,
                count_call=self._count_call,
                admit=self._meter.admits if self._meter is not None else None,
            )
            self._client_key = client_key
        wanted: dict[tuple[str, str], Instance] = {}
        for inst in config.instances:
            # An instance with notifications off takes no events: nothing it found could leave.
            # One without a realm waits for its company to be connected.
            if inst.polls and inst.event.notification.enabled and inst.realm_id:
                for name in inst.event.poller.resources:
                    wanted[(inst.name, name)] = inst
        for key in [k for k in self._loops if k not in wanted]:
            self._loops.pop(key).halt()
            log.info("poll loop stopped", instance=key[0], resource=key[1])
        polling = {inst.name: inst for inst in wanted.values()}
        for name in [n for n in self._tokens if n not in polling]:
            del self._tokens[name], self._token_key[name]
        for inst in polling.values():
            self._tokens_for(config, inst)
        self._coalescers_for(polling)
        offsets = _first_poll_offsets(polling)
        for key, inst in sorted(wanted.items()):
            loop = self._loops.get(key)
            tokens = self._tokens[inst.name]
            if loop is not None:
                same = (loop.instance.realm_id, loop.tokens, loop.client)
                if same == (inst.realm_id, tokens, self._client):
                    loop.reconfigure(inst)  # a new interval applies to the wait under way
                    continue
                loop.halt()
            loop = ResourceLoop(
                instance=inst,
                resource=BY_NAME[key[1]],
                client=self._client,
                tokens=tokens,
                outbox=self._outbox,
                metrics=self._metrics,
                on_accepted=self._on_accepted,
                on_paused=self._log_paused,
                coalescer=self._coalescers.get(inst.name),
            )
            loop.stretch = self._stretch.for_instance(inst)
            self._loops[key] = loop
            # All loops of an instance first poll together (slow lists too), so that their CDC
            # reads share one request; later ones fall due together at the common interval.
            first = inst.event.poller.interval_seconds * offsets[inst.name] * loop.stretch
            if math.isinf(loop.stretch):
                first = math.inf  # the budget holds it until the month turns
            self._group.create_task(self._run_loop(loop, first), name=f"poll:{key[0]}/{key[1]}")

    def _restretch(self, stretch: Stretch) -> None:
        self._stretch = stretch
        for loop in self._loops.values():
            loop.restretch(stretch.for_instance(loop.instance))

    def _show_stretch(self, stretch: Stretch) -> None:
        self._metrics.budget_stretch.labels("hybrid").set(stretch.hybrid)
        self._metrics.budget_stretch.labels("polling").set(stretch.polling)

    def budget_stats(self) -> dict[str, Any]:
        return self.budget.stats() if self.budget is not None else {}

    def _coalescers_for(self, polling: dict[str, Instance]) -> None:
        for name in [n for n in self._coalescers if n not in polling or not COALESCE]:
            del self._coalescers[name]
        if not COALESCE or self._client is None:
            return
        for inst in polling.values():
            tokens = self._tokens[inst.name]
            current = self._coalescers.get(inst.name)
            if current is None or (current.client, current.realm_id, current.tokens) != (
                self._client,
                inst.realm_id,
                tokens,
            ):
                self._coalescers[inst.name] = CdcCoalescer(self._client, inst.realm_id, tokens)

    async def _run_loop(self, loop: ResourceLoop, first_delay: float) -> None:
        self._running += 1
        self._idle.clear()
        try:
            await loop.run(first_delay)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    def _tokens_for(self, config: Config, inst: Instance) -> None:
        qb = config.quickbooks
        key = (token_url_for(qb.token_url), qb.client_id, qb.client_secret, inst.refresh_token)
        current = self._tokens.get(inst.name)
        # A refused instance gets a fresh manager on reload: `authorize` may have stored a new
        # refresh token meanwhile.
        unchanged = current is not None and self._token_key[inst.name] == key
        if unchanged and current is not None and not current.needs_reauthorization:
            current.forget()
            return
        self._paused.discard(inst.name)
        self._tokens[inst.name] = TokenManager(
            instance=inst.name,
            http=self._http,
            token_url=key[0],
            client_id=qb.client_id,
            client_secret=qb.client_secret,
            store=self._outbox,
            initial_refresh_token=inst.refresh_token,
            count_call=self._count_call,
            on_refused=self._on_refused,
        )
        self._token_key[inst.name] = key

    def renew_tokens(self, instance: str) -> None:
        """A new connect stored new tokens: the next `apply` gives the instance a fresh
        TokenManager (which reads them) and restarts its loops with it."""
        self._tokens.pop(instance, None)
        self._token_key.pop(instance, None)

    def reader(self, instance: str) -> tuple[Instance, QuickBooksClient, TokenManager] | None:
        """The instance as running (its realm may come from a connect), the client and its
        token manager, for reads beside the polls (a resync): the same manager as its loops',
        so that a rotated refresh token has one owner. None while it has no company."""
        config = self._config
        inst = config.instance(instance) if config is not None else None
        if self._client is None or config is None or inst is None or not inst.realm_id:
            return None
        if instance not in self._tokens:
            # A webhook-only instance has no loops; its manager lasts until the next apply.
            self._tokens_for(config, inst)
        return inst, self._client, self._tokens[instance]

    def _log_paused(self, instance: str) -> None:
        """Once per instance (until a reload brings a new token), not once per resource."""
        if instance not in self._paused:
            self._paused.add(instance)
            resources = sum(1 for inst, _ in self._loops if inst == instance)
            log.error(
                "polling paused: needs re-authorization",
                instance=instance,
                resources=resources,
                hint="run `qbo-events authorize`, then reload",
            )

    def progress(self, now: float) -> list[health.PollProgress]:
        """The polls under way, for the watchdog; `now` is time.monotonic(). A poll waiting out
        its realm's 429 pause is silent on QuickBooks' orders: its silence counts from the end."""
        polls = []
        for (inst, res), loop in self._loops.items():
            if loop.state != LoopState.POLLING:
                continue
            pause_ends = loop.client.limiter(loop.instance.realm_id).paused_until
            polls.append(
                health.PollProgress(
                    name=f"{inst}/{res}",
                    silent_for=now - max(loop.progress_at, pause_ends),
                    deadline=health.poll_deadline(loop.interval),
                )
            )
        return polls

    def instance_stats(self, name: str) -> dict[str, Any]:
        tokens = self._tokens.get(name)
        resources = {res: loop.stats() for (inst, res), loop in self._loops.items() if inst == name}
        result: dict[str, Any] = {"resources": resources}
        inst = self._config.instance(name) if self._config is not None else None
        if inst is not None and (factor := self._stretch.for_instance(inst)) != 1.0:
            result["poll_stretch"] = "paused" if math.isinf(factor) else round(factor, 2)
        if tokens is not None:
            result["tokens"] = tokens.stats()
            if tokens.needs_reauthorization:
                result["state"] = "needs re-authorization"
        return result

    def lags(self, now: float) -> dict[str, float]:
        """Per resource, the seconds its oldest cursor trails `now`."""
        result: dict[str, float] = {}
        for (_, resource), loop in self._loops.items():
            if loop.cursor:
                cursor = qbtime.parse(loop.cursor)
                lag = max(0.0, now - cursor.timestamp())
                result[resource] = max(lag, result.get(resource, 0.0))
        return result

    def client_stats(self) -> dict[str, Any]:
        return self._client.stats() if self._client is not None else {}

    def hard_expiries(self) -> dict[str, float]:
        """Per polling instance, when its refresh token's grant ends for good (0: unknown)."""
        return {name: t.hard_expires_at for name, t in self._tokens.items()}

    def reauthorization_flags(self) -> dict[str, bool]:
        return {name: t.needs_reauthorization for name, t in self._tokens.items()}


def _first_poll_offsets(polling: dict[str, Instance]) -> dict[str, float]:
    """Each instance's first poll, as a share of its interval, in a stable order: instances of
    one realm (which share its rate limit) are spread as far apart as the others allow."""
    by_realm: dict[str, list[str]] = {}
    for name in sorted(polling):
        by_realm.setdefault(polling[name].realm_id, []).append(name)
    ranked = sorted(
        (rank, realm, name) for realm, names in by_realm.items() for rank, name in enumerate(names)
    )
    count = max(1, len(ranked))
    return {name: index / count for index, (_, _, name) in enumerate(ranked)}
