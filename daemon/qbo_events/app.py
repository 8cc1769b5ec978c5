"""The daemon: builds the components from a Config, runs them, reloads them, stops them in order.

Shutdown order is structure: the sinks' task group contains the sources' task group, so on
SIGTERM the sources stop taking work, the webhook site closes, the senders drain until
`delivery.shutdown_timeout`, and only then does the outbox close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web

from qbo_events import __version__, health, health_address, logs, poll_budget
from qbo_events import config as config_module
from qbo_events.admin.api import AdminApi
from qbo_events.config import Config
from qbo_events.connect import expiry
from qbo_events.connect import status as connect_status
from qbo_events.connect.announce import announce, occasion_of
from qbo_events.connect.flow import Connected
from qbo_events.connect.pages import ConnectPages
from qbo_events.connect.store import (
    CONNECTED,
    ConnectionRow,
    ConnectionStore,
)
from qbo_events.errors import ConfigError, OutboxError, StartupError
from qbo_events.events import ConnectionStatus
from qbo_events.listeners import Listener, Site, raise_open_files_limit
from qbo_events.metrics import Metrics
from qbo_events.ops import health_app
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.meter import CallMeter
from qbo_events.routing import Routes
from qbo_events.sinks.sender import Sender, targets_from
from qbo_events.sources.pollers import Pollers
from qbo_events.sources.resync import Resyncs
from qbo_events.sources.webhooks import WebhookListener
from qbo_events.state_dir import held
from qbo_events.systemd import Notifier

log = structlog.get_logger("qbo_events.app")

OUTBOX_FILE = "outbox.sqlite3"
REPORT_INTERVAL = 60.0
# Seconds between looks at the connection rows, which `connect --local` and `disconnect` change
# from other processes.
CONNECTIONS_CHECK = 2.0


def outbox_path(config: Config) -> Path:
    return Path(config.state_dir) / OUTBOX_FILE


class Daemon:
    def __init__(self, config: Config, config_path: Path) -> None:
        self.config = config
        # What restart-only keys (state_dir, durability) run with, whatever reloads came since.
        self._started_with = config
        self.config_path = config_path
        self.started_at = time.time()
        self.metrics = Metrics()
        self.notifier = Notifier.from_env()
        self.last_reload: dict[str, Any] = {"at": None, "ok": True, "error": None}
        self._signals: asyncio.Queue[str] = asyncio.Queue()
        self._webhook_site = Site("webhooks", "http.webhook_listen")
        self._health_site = Site("health", "http.health_listen")
        self._outbox: Outbox | None = None
        self._sender: Sender | None = None
        self._listener: WebhookListener | None = None
        self._pollers: Pollers | None = None
        self._resyncs: Resyncs | None = None
        self._meter: CallMeter | None = None
        self._api_calls_seen: dict[str, int] = {}
        self._store: ConnectionStore | None = None
        # The connection rows as last applied, and the marker that tells when they changed.
        self._connections: dict[str, ConnectionRow] = {}
        self._connections_marker: tuple[float, int] = (0.0, 0)
        self._refused: asyncio.Queue[str] = asyncio.Queue()  # instances told invalid_grant
        self._warned: dict[str, str] = {}  # instance -> the UTC day its expiry was last told

    # -- the whole lifetime --------------------------------------------------------------------

    async def run(self) -> int:
        config = self.config
        logs.configure(config.log.level, config.log.format)
        logs.set_secrets(config.secrets())
        raise_open_files_limit()
        for warning in poll_budget.warnings(config):
            log.warning("config warning", problem=warning)
        loop = asyncio.get_running_loop()
        for signum, action in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
        ):
            # Handlers only enqueue; the control loop below does the work.
            loop.add_signal_handler(signum, self._signals.put_nowait, action)
        outbox = Outbox(
            outbox_path(config),
            durability=config.outbox.durability,
            max_pending=config.outbox.max_pending,
            dedupe_window=config.outbox.dedupe_window_days * 86400,
            history_days=config.outbox.history_days,
        )
        # The state_dir's lock first (StartupError if another daemon holds it), then the outbox.
        state = held(Path(config.state_dir), outbox)
        async with state, _client_session() as http, aiohttp.ClientSession() as qbo_http:
            self._outbox = outbox
            store = self._store = ConnectionStore(outbox)
            self._connections = store.connections()
            self._connections_marker = store.changed_marker()
            # The config as the connections make it: learned realms in, disconnected ones out.
            running = self._effective(config)
            meter = self._meter = CallMeter(
                outbox, on_count=lambda kind: self.metrics.quickbooks_calls.labels(kind).inc()
            )
            # The month's calls so far, so that a restart does not start the month over.
            await meter.load()
            sender = self._sender = Sender(
                outbox,
                http,
                delivery=config.delivery,
                targets=targets_from(config),
                metrics=self.metrics,
            )
            listener = self._listener = WebhookListener(
                outbox,
                routes=Routes(running),
                verifier_token=config.quickbooks.webhook_verifier_token,
                metrics=self.metrics,
                on_accepted=self._wake_senders,
                path=config.http.webhook_path,
                max_body_bytes=config.http.max_body_bytes,
                max_connections=config.http.max_connections,
                read_timeout=config.http.read_timeout,
            )
            pollers = self._pollers = Pollers(
                outbox=outbox,
                http=qbo_http,
                metrics=self.metrics,
                on_accepted=lambda name: self._wake_senders({name}),
                meter=meter,
                on_refused=self._refused.put_nowait,
            )
            listener.pages = ConnectPages(
                outbox=outbox,
                store=store,
                config=lambda: self.config,
                on_connected=self._connected,
            ).handle
            resyncs = self._resyncs = Resyncs(
                outbox=outbox,
                reader=pollers.reader,
                on_accepted=lambda name: self._wake_senders({name}),
            )
            sinks_stop = asyncio.Event()
            sources_stop = asyncio.Event()
            await self._health_site.bind(self._health_app, config.http.health_listen)
            # For `qbo-events status` when the config file on disk no longer loads.
            with contextlib.suppress(OSError):
                health_address.write(config.state_dir, config.http.health_listen)
            try:
                # Bound before the task groups, so a StartupError reaches the CLI as itself.
                await self._webhook_site.bind(self._webhook_app, config.http.webhook_listen)
                async with asyncio.TaskGroup() as sinks:
                    sinks.create_task(sender.run(sinks_stop), name="sender")
                    sinks.create_task(
                        self.notifier.run_watchdog(sinks_stop, self._wedged), name="watchdog"
                    )
                    sinks.create_task(self._report(sinks_stop), name="report")
                    # In the sinks' group: its last flush comes after the pollers have stopped.
                    sinks.create_task(meter.run(sinks_stop), name="meter")
                    sinks.create_task(outbox.run_pruning(sinks_stop), name="history")
                    try:
                        async with asyncio.TaskGroup() as sources:
                            sources.create_task(pollers.run(running, sources_stop), name="pollers")
                            sources.create_task(
                                self._watch_connections(sources_stop), name="connections"
                            )
                            sources.create_task(resyncs.run(sources_stop), name="resyncs")
                            # READY=1 promises what /readyz checks, the senders included.
                            await sender.started.wait()
                            self.notifier.ready()
                            self.notifier.status(self._summary())
                            log.info(
                                "started", version=__version__, instances=len(config.instances)
                            )
                            await self._control()
                            self.notifier.stopping()
                            log.info("stopping: intake closed, draining deliveries")
                            listener.accepting = False
                            outbox.stop_intake()
                            sources_stop.set()
                            self._refused.put_nowait("")  # wakes the connections' watch
                            await self._webhook_site.close()
                    finally:
                        sinks_stop.set()
            finally:
                await self._webhook_site.close()
                await self._health_site.close()
                self._outbox = None
        counts = outbox.stats()
        log.info("stopped", undelivered=counts["undelivered"])
        return 0

    def request_stop(self) -> None:
        """Stop as SIGTERM would; for callers that run the daemon in their own process."""
        self._signals.put_nowait("stop")

    async def _report(self, stop: asyncio.Event) -> None:
        """The periodic summary: systemd's STATUS= line and one log line."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_INTERVAL):
                    await stop.wait()
            if stop.is_set():
                return
            self.notifier.status(self._summary())
            log.info(
                "stats",
                outbox=self._outbox.stats() if self._outbox else {},
                deliveries=self._sender.stats() if self._sender else {},
                webhooks=self._listener.stats() if self._listener else {},
            )

    async def _control(self) -> None:
        while True:
            action = await self._signals.get()
            if action == "stop":
                return
            await self.reload()

    # -- reload --------------------------------------------------------------------------------

    async def reload(self) -> bool:
        self.notifier.reloading()
        try:
            new = config_module.load(self.config_path)
            await self._apply(new)
        except Exception as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [f"{exc}"]
            # `at` is when the reload was done with, so a reader of /status knows it is over.
            self.last_reload.update(at=_now_iso(), ok=False, error=problems)
            log.error("reload rejected; the running configuration stays", problems=problems)
            self.notifier.ready()
            return False
        self.last_reload.update(at=_now_iso(), ok=True, error=None)
        log.info("reloaded", instances=len(new.instances))
        for warning in poll_budget.warnings(new):
            log.warning("config warning", problem=warning)
        self.notifier.ready()
        self.notifier.status(self._summary())
        return True

    async def _apply(self, new: Config) -> None:
        """Build everything the new config needs first, bind the listeners, and only then
        change the running components, so that a failure leaves the old config in force."""
        old = self.config
        assert self._sender is not None and self._listener is not None
        assert self._outbox is not None
        if self._store is not None:
            # A reload is also when a connection stored by another process is taken up.
            self._connections = self._store.connections()
            self._connections_marker = self._store.changed_marker()
        running = self._effective(new)
        routes, targets = Routes(running), targets_from(new)
        moved: list[tuple[Site, Callable[[], Listener], str]] = []
        try:
            if new.http.webhook_listen != old.http.webhook_listen:
                await self._webhook_site.bind(self._webhook_app, new.http.webhook_listen)
                moved.append((self._webhook_site, self._webhook_app, old.http.webhook_listen))
            if new.http.health_listen != old.http.health_listen:
                await self._health_site.bind(self._health_app, new.http.health_listen)
                with contextlib.suppress(OSError):
                    # The directory in use: a state_dir changed by a reload waits for a restart.
                    health_address.write(self._outbox.path.parent, new.http.health_listen)
        except StartupError:
            for site, make_app, address in moved:
                with contextlib.suppress(StartupError):
                    await site.bind(make_app, address)
            raise
        for key, changed in (
            ("state_dir", new.state_dir != self._started_with.state_dir),
            (
                "outbox.durability",
                new.outbox.durability != self._started_with.outbox.durability,
            ),
        ):
            if changed:
                log.warning("takes effect at the next restart", key=key)
        logs.configure(new.log.level, new.log.format)
        logs.set_secrets(new.secrets() + old.secrets())
        self._listener.routes = routes
        self._listener.verifier_token = new.quickbooks.webhook_verifier_token
        self._listener.path = new.http.webhook_path
        self._listener.max_body_bytes = new.http.max_body_bytes
        self._listener.max_connections = new.http.max_connections
        self._listener.read_timeout = new.http.read_timeout
        self._outbox.max_pending = new.outbox.max_pending
        self._outbox.dedupe_window = new.outbox.dedupe_window_days * 86400
        self._outbox.history_days = new.outbox.history_days
        self._sender.configure(new.delivery, targets)
        if self._pollers is not None:
            self._pollers.apply(running)
        self.config = new

    # -- connections ---------------------------------------------------------------------------

    def _effective(self, config: Config) -> Config:
        return connect_status.effective(config, self._connections)

    def _reapply(self) -> None:
        """Hand the running components the realms the connection rows now give."""
        assert self._listener is not None
        running = self._effective(self.config)
        self._listener.routes = Routes(running)
        if self._pollers is not None:
            self._pollers.apply(running)

    async def _connected(self, done: Connected) -> None:
        """A company connected through the listener: poll it now, with its new tokens."""
        assert self._store is not None
        self._connections = self._store.connections()
        self._connections_marker = self._store.changed_marker()
        if self._pollers is not None:
            self._pollers.renew_tokens(done.instance)
        self._reapply()
        self._wake_senders({done.instance})

    async def _watch_connections(self, stop: asyncio.Event) -> None:
        """Announce lost grants, once each; take up connections that other processes changed."""
        losses: set[str] = set()  # refused instances not yet announced
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECTIONS_CHECK):
                    losses.add(await self._refused.get())
            while not self._refused.empty():
                losses.add(self._refused.get_nowait())
            losses.discard("")  # the stop's wake-up
            if stop.is_set():
                return
            try:
                for name in sorted(losses):
                    await self._lost(name)
                    losses.discard(name)
                self._take_up_changes()
                await self._warn_expiring()
            except OutboxError as exc:
                # What is left of `losses` is tried again at the next look.
                self._outbox_log_refusal("connection state not stored", exc)

    def _outbox_log_refusal(self, message: str, exc: OutboxError) -> None:
        if self._outbox is not None:
            self._outbox.log_refusal(log, message, level="error", reason=str(exc))

    async def _lost(self, name: str) -> None:
        """QuickBooks refused the instance's grant: tell its receiver, once per connection."""
        assert self._store is not None and self._outbox is not None
        inst = self.config.instance(name)
        row = self._store.connections().get(name)
        if inst is None or (row is not None and row.status != CONNECTED):
            return  # announced already, or disconnected on purpose
        realm = connect_status.serving_realm(inst, row)
        # The event first: a crash before the row changes announces it again, with the same id.
        event = await announce(
            self._outbox,
            self._store,
            self.config,
            inst,
            ConnectionStatus.NEEDS_REAUTHORIZATION,
            realm_id=realm,
            occasion=occasion_of(row.connected_at if row else 0.0),
            company_name=row.company_name if row else None,
        )
        await self._store.lost(name, realm, time.time())
        if event is not None:
            self._wake_senders({name})

    async def _warn_expiring(self) -> None:
        """Once a UTC day per instance inside quickbooks.reconnect_warning_days of its refresh
        token's hard expiry: a warning and an `expiring` event (its id is the day's)."""
        if self._pollers is None or self._store is None or self._outbox is None:
            return
        now = time.time()
        window = self.config.quickbooks.reconnect_warning_days
        for name, left in expiry.due(
            now, self._pollers.hard_expiries(), window, self._warned
        ).items():
            inst = self.config.instance(name)
            if inst is None:
                continue
            row = self._store.connections().get(name)
            log.warning(
                "quickbooks.refresh_token_expiring",
                instance=name,
                days_left=round(left, 1),
                hint=f"connect the company again: qbo-events connect --instance {name}",
            )
            event = await announce(
                self._outbox,
                self._store,
                self.config,
                inst,
                ConnectionStatus.EXPIRING,
                realm_id=connect_status.serving_realm(inst, row),
                occasion=expiry.day_of(now),
                company_name=row.company_name if row else None,
            )
            self._warned[name] = expiry.day_of(now)
            if event is not None:
                self._wake_senders({name})

    def _take_up_changes(self) -> None:
        """Re-apply when the connection rows changed: a new connect gets fresh TokenManagers."""
        assert self._store is not None
        marker = self._store.changed_marker()
        if marker == self._connections_marker:
            return
        rows = self._store.connections()
        renewed = {
            name
            for name, row in rows.items()
            if row.status == CONNECTED
            and (old := self._connections.get(name)) != row
            and (old is None or old.connected_at != row.connected_at)
        }
        before = self._effective(self.config)
        self._connections, self._connections_marker = rows, marker
        if not renewed and self._effective(self.config) == before:
            # A lost grant recorded, say: the running loops and token managers stay as they
            # are (a fresh manager would only ask QuickBooks again to be refused again).
            return
        if self._pollers is not None:
            for name in renewed:
                self._pollers.renew_tokens(name)
        self._reapply()
        if renewed:
            log.info("connections taken up", instances=sorted(renewed))
            self._wake_senders(renewed)

    # -- wiring --------------------------------------------------------------------------------

    def _wake_senders(self, instances: set[str]) -> None:
        assert self._sender is not None
        for name in instances:
            self._sender.wake(name)

    def _webhook_app(self) -> web.Server:
        assert self._listener is not None
        return self._listener.app()

    def _health_app(self) -> web.Application:
        return health_app(
            metrics=self.metrics,
            readiness=self.readiness,
            degraded=self.degraded,
            status=self.status,
            refresh_metrics=self._refresh_metrics,
            admin=AdminApi(self),
        )

    @property
    def open_outbox(self) -> Outbox | None:
        """The outbox while the daemon runs, for the admin API."""
        return self._outbox

    def wake(self, instance: str) -> None:
        """Rows of `instance` were made due (a replay, a retry): its senders look now."""
        if self._sender is not None:
            self._sender.wake(instance)

    def _wedged(self) -> list[str]:
        """What is stuck, for the watchdog: progress, not readiness (a restart cures a wedged
        dispatcher or poll, not an instance that needs re-authorization or a full disk)."""
        sender, now = self._sender, time.time()
        due_since = sender.due_since() if sender is not None else None
        return health.wedged(
            health.Progress(
                dispatching=sender is not None and sender.running,
                since_dispatch=now - sender.last_dispatch_at if sender is not None else 0.0,
                due_for=now - due_since if due_since is not None and due_since <= now else None,
                storage_ok=self._outbox is not None and self._outbox.writable,
                polls=self._pollers.progress(time.monotonic()) if self._pollers else [],
            )
        )

    def readiness(self) -> list[str]:
        reasons = []
        if self._outbox is None:
            reasons.append("outbox not open")
        elif not self._outbox.writable:
            reasons.append(f"outbox cannot write: {self._outbox.fault}")
        if self._webhook_site.runner is None:
            reasons.append("webhook listener not bound")
        if self._sender is None or not self._sender.running:
            reasons.append("senders not running")
        instances = self._instances_readiness()
        if not instances.ready:
            reasons += instances.problems
        return reasons

    def degraded(self) -> list[str]:
        """The instances that cannot do all of their job while the daemon is ready."""
        instances = self._instances_readiness()
        return instances.problems if instances.ready else []

    def _instances_readiness(self) -> health.Readiness:
        refused = self._pollers.reauthorization_flags() if self._pollers else {}
        return health.instances_readiness(
            health.InstanceState(
                name=inst.name,
                polls=inst.polls,
                takes_webhooks=inst.takes_webhooks,
                needs_reauthorization=refused.get(inst.name, False),
            )
            for inst in self.config.instances
            if inst.event.notification.enabled
        )

    async def _refresh_metrics(self) -> None:
        if self._outbox is not None:
            self.metrics.outbox_depth.set(self._outbox.pending)
            self.metrics.outbox_commit_seconds.set(self._outbox.commit_seconds)
            self.metrics.outbox_slow_storage.set(int(self._outbox.slow_storage))
        if self._pollers is not None:
            for name, refused in self._pollers.reauthorization_flags().items():
                self.metrics.needs_reauthorization.labels(name).set(int(refused))
            now = time.time()
            for name, at in self._pollers.hard_expiries().items():
                if at:
                    self.metrics.refresh_token_expiry.labels(name).set(max(0.0, at - now))
            for resource, lag in self._pollers.lags(time.time()).items():
                self.metrics.poll_lag.labels(resource).set(lag)
        if self._meter is not None:
            self.metrics.quickbooks_calls_month.set(self._meter.total())
            self.metrics.quickbooks_calls_projection.set(self._meter.stats()["projection"])
        if self._pollers is not None:
            calls = self._pollers.client_stats().get("calls", {})
            for status, count in calls.items():
                # The client keeps plain counts; the Prometheus counter takes the increase.
                seen = self._api_calls_seen.get(status, 0)
                if count > seen:
                    self.metrics.api_calls.labels(str(status)).inc(count - seen)
                self._api_calls_seen[status] = count

    def _summary(self) -> str:
        pending = self._outbox.pending if self._outbox else 0
        delivered = self._sender.delivered if self._sender else 0
        return (
            f"{len(self.config.instances)} instances, {pending} undelivered, {delivered} delivered"
        )

    def _resync_stats(self, instance: str) -> dict[str, Any]:
        job = self._resyncs.instance_stats(instance) if self._resyncs else None
        return {} if job is None else {"resync": job}

    async def status(self) -> dict[str, Any]:
        config = self.config
        refused = self._pollers.reauthorization_flags() if self._pollers else {}
        counts, unread = None, {}
        if self._outbox is not None:
            try:
                counts = await self._outbox.counts()
            except OutboxError as exc:
                # /status is where an operator looks when storage fails: answer with what is known.
                unread = {"counts_error": str(exc)}
        return {
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 3),
            "config": str(self.config_path),
            "last_reload": self.last_reload,
            "ready": not (reasons := self.readiness()),
            "reasons": reasons,
            "degraded": self.degraded(),
            "watchdog": {
                "interval": self.notifier.watchdog_interval(),
                "withheld": self.notifier.withheld,
            },
            "instances": {
                inst.name: {
                    "realm_id": connect_status.serving_realm(
                        inst, self._connections.get(inst.name)
                    ),
                    "connection": connect_status.describe(
                        inst, self._connections.get(inst.name), refused.get(inst.name, False)
                    ),
                    "vendor_type": inst.event.vendor.type,
                    "callback_host": urlsplit(inst.callback_url).hostname,
                    "endpoint": self._sender.health.describe(inst.name) if self._sender else None,
                    "resources": {},
                    **(self._pollers.instance_stats(inst.name) if self._pollers else {}),
                    **({"api_calls": self._meter.instance_stats(inst.name)} if self._meter else {}),
                    **self._resync_stats(inst.name),
                }
                for inst in config.instances
            },
            "quickbooks": {
                **(self._pollers.client_stats() if self._pollers else {}),
                **({"api_calls": self._meter.stats()} if self._meter else {}),
                **({"budget": self._pollers.budget_stats()} if self._pollers else {}),
            },
            "webhooks": self._listener.stats() if self._listener else {},
            "outbox": {
                **(self._outbox.stats() if self._outbox else {}),
                **(
                    {}
                    if counts is None
                    else {
                        "pending": counts.pending,
                        "retrying": counts.retrying,
                        "dead": counts.dead,
                        "quarantined": counts.quarantined,
                    }
                ),
                **unread,
            },
            "deliveries": self._sender.stats() if self._sender else {},
        }


def _client_session() -> aiohttp.ClientSession:
    # Our own per-endpoint cap governs; the connector must not queue requests behind it.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    # A receiver's cookies must not travel to the next delivery; skipping the jar is cheaper too.
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar()
    )


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
