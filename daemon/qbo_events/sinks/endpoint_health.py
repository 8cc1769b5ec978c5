"""Each instance's callback endpoint health, kept by the senders: the durable pause table (its SQL
lives here, run by the outbox), hand resumes from other processes, the state gauge and alerts.

Health is kept per instance, that is per callback URL, not per host (`Target.endpoint`): two
instances on one host are often two applications behind one proxy, and one of them failing says
nothing of the other; `deliveries resume --instance`, `/status` and the gauge all name instances.
A host that is down for all of them pauses each one, at the cost of one probe per instance.

Only endpoints that are not healthy have a row, written at their transitions (and at failed
probes). A hand resume deletes the row; the daemon takes a missing row of an endpoint it holds
paused or failing as that resume, re-reading the table every few seconds while any is.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import structlog

from qbo_events.config import DeliveryConfig
from qbo_events.errors import OutboxError
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox
from qbo_events.sinks import endpoint_state as es
from qbo_events.sinks.alerts import Alert, Alerts

log = structlog.get_logger("qbo_events.endpoint_health")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS endpoint_health (
    instance TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    last_success_at REAL,
    consecutive_failures INTEGER NOT NULL,
    failing_since REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID
"""
# Seconds between looks at the table for hand resumes, while any endpoint is not healthy.
RESUME_CHECK: Final = 2.0


def _ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)


def _due_now(conn: sqlite3.Connection, instance: str, now: float) -> None:
    """Every undelivered row of the instance due now: at a pause, so that the probes take the
    oldest; at a resume, so that the backlog goes at once rather than at its retry times."""
    conn.execute(
        "UPDATE outbox SET next_at = ? WHERE instance = ? AND state = 'pending' AND next_at > ?",
        (now, instance, now),
    )


def shown(url: str) -> str:
    """A callback as notices and /status show it: no user info or query (they may hold secrets)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


async def resume(outbox: Outbox, instance: str) -> bool:
    """`deliveries resume`: resume a paused or failing endpoint by hand, its backlog due now.
    False when it was healthy already. The running daemon notices within RESUME_CHECK."""
    now = time.time()

    def op(conn: sqlite3.Connection) -> bool:
        _ensure_table(conn)
        gone = conn.execute("DELETE FROM endpoint_health WHERE instance = ?", (instance,)).rowcount
        if gone:
            _due_now(conn, instance, now)
        return bool(gone)

    return await outbox.execute(op)


class EndpointHealth:
    def __init__(
        self,
        outbox: Outbox,
        *,
        delivery: DeliveryConfig,
        urls: Mapping[str, str],
        metrics: Metrics,
        alerts: Alerts,
        on_resumed: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._delivery = delivery
        self._metrics = metrics
        self._alerts = alerts
        self._on_resumed = on_resumed
        self._clock = clock
        self._health: dict[str, es.Health] = {}
        # Writes of an instance's row not yet committed; the resume check leaves it alone
        # meanwhile, or it would take a row not yet written for a row deleted by hand.
        self._writing: dict[str, int] = defaultdict(int)
        # Whether the instance's row is as its state says (a failed write makes it unknown).
        self._stored: dict[str, bool] = defaultdict(lambda: True)
        self._changed = asyncio.Event()
        self.configure(delivery, urls)

    def configure(self, delivery: DeliveryConfig, urls: Mapping[str, str]) -> None:
        """A reload: new limits at once; an instance pointed at a new URL starts over healthy."""
        self._delivery = delivery
        now = self._clock()
        for name, url in urls.items():
            old = self._health.get(name)
            if old is None:
                self._health[name] = es.Health(url=url)
            else:
                new = es.reprobed(es.retargeted(old, url), now, delivery.probe_interval)
                self._health[name] = new
            self._gauge(name)

    async def load(self) -> None:
        """Take up the stored states of the configured instances (a pause survives a restart)."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            _ensure_table(conn)
            return conn.execute(
                "SELECT instance, url, state, last_success_at, consecutive_failures,"
                " failing_since FROM endpoint_health"
            ).fetchall()

        for name, url, state, success, count, since in await self._outbox.execute(op):
            current = self._health.get(name)
            if current is None or current.url != url:
                continue  # another callback now: the stored state was about the old one
            self._health[name] = es.restored(
                url,
                state,
                last_success_at=success,
                consecutive_failures=count,
                failing_since=since,
                now=now,
            )
            self._gauge(name)
            log.warning("endpoint not healthy at start", instance=name, state=state)
        self._changed.set()

    # -- what the sender asks --------------------------------------------------------------

    def paused(self, name: str) -> bool:
        health = self._health.get(name)
        return health is not None and health.state is es.State.PAUSED

    def next_probe_at(self, name: str) -> float:
        health = self._health.get(name)
        return (health.next_probe_at or 0.0) if health is not None else 0.0

    def take_probe(self, name: str, now: float) -> bool:
        """Whether a paused endpoint's probe may go now; if so, the next waits probe_interval."""
        health = self._health.get(name)
        if health is None or not es.may_probe(health, now):
            return False
        self._health[name] = es.probe_taken(health, now, self._delivery.probe_interval)
        return True

    async def succeeded(self, name: str, url: str) -> None:
        """A 2xx from `url`, the instance's callback when the attempt began."""
        health = self._health.get(name)
        if health is None or health.url != url:
            return  # a reload moved the instance meanwhile: this says nothing of the new URL
        now = self._clock()
        new, notice = es.succeeded(health, now)
        self._health[name] = new
        if notice is None:
            return
        log.info("endpoint recovered", instance=name, endpoint=shown(new.url))
        self._gauge(name)
        self._alert(name, new.url, notice)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM endpoint_health WHERE instance = ?", (name,))
            _due_now(conn, name, now)

        await self._write(name, op)

    async def failed(self, name: str, url: str) -> bool:
        """Count a failed attempt at `url`; whether the endpoint is paused now (the attempt
        then does not count toward dead-lettering)."""
        health = self._health.get(name)
        if health is None or health.url != url:
            return False
        now = self._clock()
        was = health.state
        new, notice = es.failed(
            health,
            now,
            pause_after=self._delivery.pause_after,
            probe_interval=self._delivery.probe_interval,
        )
        self._health[name] = new
        if notice is not None:
            self._alert(name, new.url, notice)
            self._gauge(name)
            log.warning(
                "endpoint paused: only probes until it answers 2xx"
                if new.state is es.State.PAUSED
                else "endpoint failing",
                instance=name,
                endpoint=shown(new.url),
                consecutive_failures=new.consecutive_failures,
                probe_interval=self._delivery.probe_interval,
            )
        if notice is not None or was is es.State.PAUSED:
            row = (
                name,
                new.url,
                new.state.value,
                new.last_success_at,
                new.consecutive_failures,
                new.failing_since,
                now,
            )
            pausing = new.state is es.State.PAUSED and was is not es.State.PAUSED

            def op(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO endpoint_health (instance, url, state,"
                    " last_success_at, consecutive_failures, failing_since, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                if pausing:
                    _due_now(conn, name, now)

            await self._write(name, op)
        return new.state is es.State.PAUSED

    async def _write(self, name: str, op: Callable[[sqlite3.Connection], None]) -> None:
        self._writing[name] += 1
        try:
            await self._outbox.execute(op)
            self._stored[name] = True
        except OutboxError as exc:
            self._stored[name] = False
            self._outbox.log_refusal(
                log, "endpoint health not stored", level="error", instance=name, error=str(exc)
            )
        finally:
            self._writing[name] -= 1
            self._changed.set()

    # -- hand resumes ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: while any endpoint is not healthy, look for hand resumes."""
        while not stop.is_set():
            self._changed.clear()
            watched = [
                name
                for name, health in self._health.items()
                if health.state is not es.State.HEALTHY
            ]
            if watched:
                with contextlib.suppress(OutboxError):
                    self._take_up_resumes(watched)
            with contextlib.suppress(TimeoutError):
                # While all are healthy, only a transition starts the looking.
                async with asyncio.timeout(RESUME_CHECK if watched else None):
                    await (stop.wait() if watched else _either(stop, self._changed))

    def _take_up_resumes(self, watched: list[str]) -> None:
        rows = set(
            self._outbox.query(
                lambda conn: [r[0] for r in conn.execute("SELECT instance FROM endpoint_health")]
            )
        )
        for name in watched:
            health = self._health[name]
            if name in rows or self._writing[name] or not self._stored[name]:
                continue
            if health.state is es.State.HEALTHY:
                continue
            self._health[name] = es.resumed(health)
            self._gauge(name)
            log.info("endpoint resumed by hand", instance=name, endpoint=shown(health.url))
            self._on_resumed(name)

    # -- reporting -------------------------------------------------------------------------

    def _gauge(self, name: str) -> None:
        self._metrics.endpoint_state.labels(name).set(es.GAUGE[self._health[name].state])

    def _alert(self, name: str, url: str, notice: es.Notice) -> None:
        self._alerts.send(Alert(instance=name, endpoint=shown(url), notice=notice))

    def describe(self, name: str) -> dict[str, Any] | None:
        """The instance's `endpoint` in /status."""
        health = self._health.get(name)
        if health is None:
            return None
        return {
            "url": shown(health.url),
            "state": health.state.value,
            "last_success_at": _iso(health.last_success_at),
            "consecutive_failures": health.consecutive_failures,
            "failing_since": _iso(health.failing_since),
            "paused_until_probe": (
                _iso(health.next_probe_at) if health.state is es.State.PAUSED else None
            ),
        }

    def stats(self) -> dict[str, int]:
        counts = {state.value: 0 for state in es.State}
        for health in self._health.values():
            counts[health.state.value] += 1
        return counts


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    async with asyncio.TaskGroup() as group:
        waits = [group.create_task(e.wait()) for e in (first, second)]
        done = asyncio.Event()
        for wait in waits:
            wait.add_done_callback(lambda _: done.set())
        await done.wait()
        for wait in waits:
            wait.cancel()
