"""The bounded pool of async senders that drains the outbox into signed callback deliveries.

A dispatcher picks the rows that may go now (due, not behind an undelivered earlier event of the
same object, endpoint under its in-flight cap) and starts one short task per delivery in the
sender's task group, never more than `delivery.workers` at once. A waiting retry is a row with a
future `next_at`, not a sleeping task, so it holds no sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import structlog

from qbo_events import __version__
from qbo_events.config import Config, DeliveryConfig
from qbo_events.errors import DeliveryError, DeliveryRejected, DeliveryTimeout, OutboxError
from qbo_events.history import RESPONSE_HEAD, Attempt
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox, Row
from qbo_events.sinks import payload, retry, signing
from qbo_events.sinks.alerts import Alerts
from qbo_events.sinks.endpoint_health import EndpointHealth, shown

log = structlog.get_logger("qbo_events.sender")

# Rows of instances the config no longer names are re-examined this often, in case a reload
# brings them back; until then they stay in the outbox.
_ORPHAN_RECHECK = 60.0
# Rows changed behind the daemon's back (`deliveries retry` from another process) are found
# by a full rescan this often.
_RESCAN = 5.0
# Rows fetched per query when fewer slots are free: most deliveries then start without one.
_FETCH_AHEAD = 32
# How long an instance's deliveries pause when the outbox cannot record outcomes.
_OUTBOX_TROUBLE_WAIT = 5.0
# How often the dispatcher tries again while the outbox cannot be read or written.
_OUTBOX_TROUBLE_RETRY = 1.0
# Fetched-ahead rows held in memory at most, over all instances.
_READY_LIMIT = 512


class Target(msgspec.Struct, frozen=True):
    """Where and how one instance's events are delivered."""

    instance: str
    url: str
    key: bytes | None
    tags: tuple[str, ...]
    # During a key rotation: also signs `webhook-signature`, so receivers may switch keys late.
    previous_key: bytes | None = None

    @property
    def endpoint(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


def targets_from(config: Config) -> dict[str, Target]:
    return {
        inst.name: Target(
            instance=inst.name,
            url=inst.callback_url,
            key=signing.key_bytes(inst.signature_key) if inst.signature_key else None,
            tags=tuple(inst.tags),
            previous_key=(
                signing.key_bytes(inst.previous_signature_key)
                if inst.signature_key and inst.previous_signature_key
                else None
            ),
        )
        for inst in config.instances
        if inst.event.notification.enabled
    }


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        http: aiohttp.ClientSession,
        *,
        delivery: DeliveryConfig,
        targets: Mapping[str, Target],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._http = http
        self._metrics = metrics
        self._clock = clock
        self._delivery = delivery
        self._targets: dict[str, Target] = dict(targets)
        self._wakeup = asyncio.Event()
        self._next_due: dict[str, float] = {}
        # Instances marked due while a read of their rows was under way: what that read found
        # may predate the change, so it must not put them to sleep.
        self._woken: set[str] = set()
        # Rows fetched and not yet recorded as delivered or rescheduled, by instance: in the
        # ready queue, on the wire, or being written back.
        self._inflight: dict[str, set[int]] = defaultdict(set)
        self._ready: dict[str, deque[Row]] = defaultdict(deque)
        self._endpoint_busy: dict[str, int] = defaultdict(int)
        self._busy = 0  # requests on the wire: what `workers` bounds
        self._tasks = 0  # delivery tasks alive, including their outbox write
        self._idle = asyncio.Event()
        self._idle.set()
        self._delivered_metric = metrics.deliveries.labels("delivered")
        self.alerts = Alerts(http, delivery)
        self.health = EndpointHealth(
            outbox,
            delivery=delivery,
            urls=_urls(self._targets),
            metrics=metrics,
            alerts=self.alerts,
            on_resumed=self.wake,
        )
        self.running = False
        self.started = asyncio.Event()
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.last_dispatch_at = 0.0

    # -- control -------------------------------------------------------------------------------

    def configure(self, delivery: DeliveryConfig, targets: Mapping[str, Target]) -> None:
        """Apply a reload: new URLs, keys and limits hold from the next attempt on. Targets of
        removed instances are kept so that their accepted events are still delivered."""
        self._delivery = delivery
        self._targets.update(targets)
        self.health.configure(delivery, _urls(targets))
        self.alerts.configure(delivery)
        for name in targets:
            self._mark_due(name)
        self._wakeup.set()

    def _mark_due(self, name: str, at: float = 0.0) -> None:
        self._next_due[name] = at
        self._woken.add(name)

    def wake(self, instance: str) -> None:
        """New rows of `instance` are in the outbox."""
        if instance in self._targets:
            self._mark_due(instance)
            self._wakeup.set()

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "in_flight": self._busy,
            "delivered": self.delivered,
            "failed_attempts": self.failed,
            "dead_lettered": self.dead,
            "endpoints_busy": {k: v for k, v in self._endpoint_busy.items() if v},
            "endpoints": self.health.stats(),
            "alerts": self.alerts.stats(),
        }

    def due_since(self) -> float | None:
        """Since when (clock time) work has waited for the dispatcher with a sender slot free
        to take it; None when none waits or every slot is busy. Read by the watchdog."""
        if self._busy >= self._delivery.workers:
            return None
        return min(self._takeable_due(), default=None)

    def _takeable_due(self) -> Iterator[float]:
        """When each instance with a target and a free endpoint slot has work due."""
        for name, due in self._next_due.items():
            if name in self._targets and not self._saturated(name):
                yield due

    def __repr__(self) -> str:
        return f"<Sender in_flight={self._busy} delivered={self.delivered} failed={self.failed}>"

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then give in-flight deliveries `shutdown_timeout` to finish
        and cancel the rest, which stay in the outbox."""
        try:
            await self.health.load()
        except OutboxError as exc:
            # Paused endpoints then get one attempt each before they pause again.
            log.error("stored endpoint health not read", error=str(exc))
        self.running = True
        self.started.set()
        try:
            async with asyncio.TaskGroup() as deliveries:
                deliveries.create_task(self._wake_on(stop), name="sender-stop")
                deliveries.create_task(self.health.run(stop), name="endpoint-health")
                deliveries.create_task(self.alerts.run(stop), name="alerts")
                await self._dispatch(deliveries, stop)
                if self._tasks:
                    log.info("draining deliveries", in_flight=self._tasks)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._delivery.shutdown_timeout):
                            await self._idle.wait()
                if self._tasks:
                    log.warning("deliveries cut off at shutdown", count=self._tasks)
                    raise _CutOff  # leaving the group by an exception cancels its tasks
        except* _CutOff:
            pass
        finally:
            self.running = False

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

    async def _dispatch(self, deliveries: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        last_rescan = -math.inf  # the first round scans: the rows left from the last run
        while not stop.is_set():
            self._wakeup.clear()
            now = self._clock()
            try:
                if not self._outbox.writable:
                    # An outcome could not be recorded: a delivery now would only be sent
                    # again later. The outbox logs the fault and probes for its end. Waiting
                    # on purpose is progress to the watchdog: a restart would not cure it.
                    self.last_dispatch_at = self._clock()
                    await self._sleep(_OUTBOX_TROUBLE_RETRY)
                    continue
                if now - last_rescan > _RESCAN:
                    for name, at in (await self._outbox.instances_with_work()).items():
                        self._mark_due(name, min(self._next_due.get(name, math.inf), at))
                    last_rescan = now
                await self._round(deliveries, now)
            except OutboxError as exc:
                # Whatever the storage does, the senders keep going and try again.
                self._outbox.log_refusal(
                    log, "outbox unavailable to the senders", level="error", error=str(exc)
                )
                await self._sleep(_OUTBOX_TROUBLE_RETRY)
                continue
            self.last_dispatch_at = self._clock()
            await self._sleep(self._sleep_for(self._clock()))

    async def _sleep(self, seconds: float | None) -> None:
        """Until woken (new rows, a finished delivery, stop) or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    def _sleep_for(self, now: float) -> float | None:
        if self._busy >= self._delivery.workers:
            return None  # a finishing delivery wakes us
        soonest = min(self._takeable_due(), default=math.inf)
        return max(0.0, min(soonest - now, _RESCAN))

    def _saturated(self, name: str) -> bool:
        target = self._targets.get(name)
        if target is None:
            return False
        return self._endpoint_busy[target.endpoint] >= self._delivery.max_in_flight_per_endpoint

    def _free(self, target: Target) -> int:
        return min(
            self._delivery.workers - self._busy,
            self._delivery.max_in_flight_per_endpoint - self._endpoint_busy[target.endpoint],
        )

    async def _round(self, deliveries: asyncio.TaskGroup, now: float) -> None:
        for name, due in sorted(self._next_due.items(), key=lambda item: item[1]):
            if due > now:
                break
            if self._busy >= self._delivery.workers:
                return
            target = self._targets.get(name)
            if target is None:
                self._next_due[name] = now + _ORPHAN_RECHECK
                log.warning(
                    "undelivered events of an instance that is not in the config or has"
                    " notifications disabled; they stay in the outbox",
                    instance=name,
                )
                continue
            free = self._free(target)
            if free <= 0:
                continue
            probing = self.health.paused(name)
            if probing:
                # A paused endpoint takes one probe per probe_interval: the first due row,
                # fetched for it, not one fetched ahead.
                self._drop_ready(name)
                if not self.health.take_probe(name, now):
                    self._next_due[name] = self.health.next_probe_at(name)
                    continue
            ready = self._ready[name]
            if not ready:
                # Fetch ahead: a slot that frees up later then needs no query of its own.
                ahead = sum(len(q) for q in self._ready.values()) < _READY_LIMIT
                want = 1 if probing else max(free, _FETCH_AHEAD) if ahead else free
                self._woken.discard(name)
                rows, later = await self._outbox.due(name, want, self._inflight[name])
                self._inflight[name].update(row.seq for row in rows)
                ready.extend(rows)
                if len(rows) < want and name not in self._woken:
                    self._next_due[name] = later if later is not None else math.inf
                target = self._targets.get(name, target)  # a reload may have come meanwhile
                free = self._free(target)
            if probing:
                free = min(free, 1)
            while ready and free > 0:
                self._start(deliveries, ready.popleft(), target)
                free -= 1
            if probing:
                self._next_due[name] = self.health.next_probe_at(name)
            elif ready:
                self._mark_due(name)

    def _drop_ready(self, name: str) -> None:
        """Forget the rows fetched ahead for `name`: they stay due in the outbox."""
        ready = self._ready.get(name)
        while ready:
            self._inflight[name].discard(ready.popleft().seq)

    def _start(self, deliveries: asyncio.TaskGroup, row: Row, target: Target) -> None:
        self._busy += 1
        self._tasks += 1
        self._idle.clear()
        self._endpoint_busy[target.endpoint] += 1
        deliveries.create_task(self._deliver(row, target), name=f"deliver:{row.seq}")

    async def _deliver(self, row: Row, target: Target) -> None:
        try:
            failure: DeliveryError | None = None
            note = _Note(at=time.time(), began=time.monotonic())
            try:
                await self._attempt(row, target, note)
            except DeliveryError as exc:
                failure = exc
            except Exception as exc:
                # A bug here must cost one attempt of one event, not the daemon.
                log.exception("delivery attempt failed unexpectedly", seq=row.seq)
                failure = DeliveryError(f"internal error: {type(exc).__name__}")
            finally:
                # The exchange is over: its sender and endpoint slot may serve another row
                # while this outcome is written to the outbox.
                self._busy -= 1
                self._endpoint_busy[target.endpoint] -= 1
                self._wakeup.set()
            attempt = note.attempt(target, failure)
            host = _host(target.url)
            self._metrics.delivery_attempt_seconds.labels(host).observe(attempt.latency_ms / 1000)
            self._metrics.delivery_attempts.labels(host, _outcome(note.status, failure)).inc()
            if failure is not None:
                await self._failed(row, failure, attempt, target)
            else:
                await self._outbox.delivered(row.seq, attempt, note.body)
                self.delivered += 1
                self._delivered_metric.inc()
                self._metrics.delivery_latency.observe(self._clock() - row.accepted_at)
                await self.health.succeeded(target.instance, target.url)
        except OutboxError as exc:
            self._outbox.log_refusal(
                log,
                "could not record a delivery outcome",
                level="error",
                seq=row.seq,
                error=str(exc),
            )
            # The row is still due; sending it again at once would only repeat the failure.
            self._next_due[target.instance] = self._clock() + _OUTBOX_TROUBLE_WAIT
        else:
            # Rows waiting behind this one (same object) may go now.
            self._mark_due(target.instance)
        finally:
            self._tasks -= 1
            self._inflight[target.instance].discard(row.seq)
            if not self._tasks:
                self._idle.set()
            self._wakeup.set()

    async def _failed(self, row: Row, exc: DeliveryError, attempt: Attempt, target: Target) -> None:
        self.failed += 1
        error = str(exc) or type(exc).__name__
        gone = isinstance(exc, DeliveryRejected) and exc.gone
        if await self.health.failed(target.instance, target.url) and not gone:
            # Paused: the attempt does not count toward dead-lettering, and the row stays due
            # for the next probe. A paused endpoint's backlog waits; it does not die.
            await self._outbox.retry_later(row.seq, row.attempts, self._clock(), error, attempt)
            self._metrics.deliveries.labels("retry").inc()
            return
        attempts = row.attempts + 1
        delay = None
        if not gone:
            delay = retry.next_delay(
                attempts, self._delivery.retry_schedule, retry_after=exc.retry_after
            )
        logger = log.bind(instance=row.event.instance, event_id=row.event.event_id)
        if delay is None:
            await self._outbox.dead_letter(row.seq, attempts, error, attempt)
            self.dead += 1
            self._metrics.deliveries.labels("dead").inc()
            logger.warning("delivery dead-lettered", attempts=attempts, error=error)
        else:
            await self._outbox.retry_later(row.seq, attempts, self._clock() + delay, error, attempt)
            self._metrics.deliveries.labels("retry").inc()
            logger.info(
                "delivery failed; will retry", attempts=attempts, delay=round(delay, 3), error=error
            )

    async def _attempt(self, row: Row, target: Target, note: _Note) -> None:
        event = row.event
        body, content_type = payload.render(
            event, instance_name=target.instance, tags=target.tags, fmt=self._delivery.format
        )
        note.body = body
        timestamp = int(time.time())
        headers = {
            "Content-Type": content_type,
            "User-Agent": f"qbo-events/{__version__}",
            "Elements-Webhook-Id": event.event_id,
            "webhook-id": event.event_id,
            "webhook-timestamp": str(timestamp),
        }
        if target.key is not None:
            headers["Elements-Webhook-Signature"] = signing.elements_signature(target.key, body)
            headers["webhook-signature"] = signing.standard_signatures(
                (target.key, target.previous_key), event.event_id, timestamp, body
            )
        try:
            async with self._http.post(
                target.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._delivery.timeout),
            ) as response:
                status = note.status = response.status
                if self._outbox.history_days > 0:
                    # Within the attempt's timeout: a receiver that trickles its answer is slow.
                    note.response = await response.content.read(RESPONSE_HEAD)
                retry_after = retry.parse_retry_after(
                    response.headers.get("Retry-After"), time.time()
                )
        except TimeoutError:
            raise DeliveryTimeout(f"no answer within {self._delivery.timeout} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise DeliveryRejected(
                status, retry_after=retry_after if status in (429, 503) else None
            )


class _Note:
    """What one attempt saw, filled in as it goes, for the delivery history."""

    def __init__(self, *, at: float, began: float) -> None:
        self.at = at
        self.began = began
        self.body: bytes | None = None
        self.status: int | None = None
        self.response = b""

    def attempt(self, target: Target, failure: DeliveryError | None) -> Attempt:
        return Attempt(
            at=self.at,
            endpoint=shown(target.url),
            latency_ms=(time.monotonic() - self.began) * 1000,
            status=self.status,
            error=None if failure is None else (str(failure) or type(failure).__name__),
            response=self.response,
        )


def _urls(targets: Mapping[str, Target]) -> dict[str, str]:
    return {name: target.url for name, target in targets.items()}


def _host(url: str) -> str:
    """The metrics' endpoint label: host[:port], bounded by the configured callbacks."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _outcome(status: int | None, failure: DeliveryError | None) -> str:
    if isinstance(failure, DeliveryTimeout):
        return "timeout"
    if status is not None:
        return f"{status // 100}xx"
    return "error"


class _CutOff(Exception):
    """Raised inside the deliveries' group when the drain deadline passes."""
