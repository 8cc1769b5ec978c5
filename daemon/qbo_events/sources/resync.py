"""Resync jobs run inside the daemon: read QuickBooks again and deliver every object found.

`qbo-events resync` (another process) records a job; `Resyncs.run` looks at the jobs every few
seconds and runs each in its own task. A job reads its resources one after the other, CDC when
`--since` is within CDC's 30 days and the entity has CDC, else Query, through the pollers'
QuickBooksClient (so the realm limits, the call meter and the monthly budget apply). Each page's
events go into the outbox with the job's progress in one transaction, past the outbox's dedupe:
a kill resumes from the last stored page, which may deliver that page's successor twice but
never loses one. At the end the job waits until every event it stored has left the outbox, and
only then accepts its RESYNC event: events of different objects are delivered concurrently, so
no place in the outbox alone would make the RESYNC event arrive last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from qbo_events import qbtime
from qbo_events.config import Instance
from qbo_events.errors import (
    BudgetExhausted,
    NeedsReauthorization,
    OutboxClosed,
    OutboxError,
    OutboxFull,
    QuickBooksError,
)
from qbo_events.events import Event, Resync, ResyncStatus, make_event, resync_event
from qbo_events.normalize import change_from_object
from qbo_events.outbox import Outbox
from qbo_events.quickbooks import paging
from qbo_events.quickbooks.client import QuickBooksClient
from qbo_events.quickbooks.oauth import TokenManager
from qbo_events.quickbooks.resources import BY_NAME, Resource
from qbo_events.resync_store import (
    CANCELLED,
    COMPLETED,
    DRAINING,
    QUEUED,
    Job,
    Position,
    ResyncStore,
    finish,
    progress,
)
from qbo_events.sources.coalesce import CDC_CAP
from qbo_events.sources.poller import CDC_HORIZON, NAME_LISTS

log = structlog.get_logger("qbo_events.resync")

# Seconds between looks at the jobs table, which `qbo-events resync` writes from its process.
CHECK_INTERVAL: Final = 2.0
# Seconds between looks at whether a finished job's events have all been delivered.
DRAIN_CHECK: Final = 0.5
OUTBOX_FULL_WAIT: Final = 1.0
RETRY_START: Final = 5.0
RETRY_MAX: Final = 300.0
# A spent monthly budget lasts until the month turns: look again now and then, cheaply.
BUDGET_WAIT: Final = 300.0
# How long pages under way get to finish when the daemon stops.
STOP_GRACE: Final = 1.0

Reader = Callable[[str], tuple[Instance, QuickBooksClient, TokenManager] | None]


class _Stopped(Exception):
    """Raised inside the jobs' group to cancel pages still running at a stop."""


class Resyncs:
    """Takes up the recorded jobs and runs them; a restart resumes the unfinished ones."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        reader: Reader,
        on_accepted: Callable[[str], None],
        check_interval: float = CHECK_INTERVAL,
        budget_wait: float = BUDGET_WAIT,
    ) -> None:
        self.outbox = outbox
        self.store = ResyncStore(outbox)
        self.reader = reader
        self.on_accepted = on_accepted
        self._check_interval = check_interval
        self.budget_wait = budget_wait
        self._running: set[str] = set()  # ids of the jobs with a task
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"<Resyncs running={len(self._running)}>"

    def instance_stats(self, instance: str) -> dict[str, Any] | None:
        """The instance's latest job for /status, or None when it never had one."""
        try:
            job = self.store.latest(instance)
        except OutboxError:
            return None
        return None if job is None else job.summary()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while not stop.is_set():
                    try:
                        jobs = self.store.active()
                    except OutboxError as exc:
                        log.warning("resync jobs not read", error=str(exc))
                        jobs = []
                    for job in jobs:
                        if job.id not in self._running:
                            self._running.add(job.id)
                            self._idle.clear()
                            group.create_task(self._job(job, stop), name=f"resync:{job.id}")
                    await _pause(stop, self._check_interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_GRACE):
                        await self._idle.wait()
                if not self._idle.is_set():
                    # A page cut off commits nothing: its events and its progress go together.
                    raise _Stopped
        except* _Stopped:
            pass

    async def _job(self, job: Job, stop: asyncio.Event) -> None:
        try:
            await JobRun(self, job, stop).run()
        except Exception:
            # One job's trouble must not take the daemon down; a restart tries it again.
            log.exception("resync failed unexpectedly", resync=job.id)
        finally:
            self._running.discard(job.id)
            if not self._running:
                self._idle.set()


class JobRun:
    """One job from where it stands to its RESYNC event, or to the daemon's stop."""

    def __init__(self, owner: Resyncs, job: Job, stop: asyncio.Event) -> None:
        self._owner = owner
        self._store = owner.store
        self._outbox = owner.outbox
        self.job = job
        self._stop = stop
        self._retry = RETRY_START
        self.log = log.bind(resync=job.id, instance=job.instance)

    async def run(self) -> None:
        if self.job.state == QUEUED:
            await self._store.start(self.job.id, time.time())
            self.log.info(
                "resync started", resources=list(self.job.resources), since=self.job.since
            )
        while not self._stop.is_set():
            fresh = self._store.get(self.job.id)
            if fresh is None or not fresh.active:
                return
            self.job = fresh
            if fresh.state == DRAINING or fresh.cancel or fresh.done >= len(fresh.resources):
                break
            wait = await self._step()
            if wait:
                await self._wait(wait)
        if self._stop.is_set():
            return
        await self._store.drain(self.job.id)
        await self._finish()

    async def _wait(self, seconds: float) -> None:
        """Until `seconds` pass, the daemon stops, or the job is cancelled."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            await _pause(self._stop, min(left, CHECK_INTERVAL))
            with contextlib.suppress(OutboxError):
                fresh = self._store.get(self.job.id)
                if fresh is None or fresh.cancel:
                    return

    async def _step(self) -> float:
        """One page; the seconds to wait before the next try when it failed."""
        reader = self._owner.reader(self.job.instance)
        if reader is None:
            return await self._failed("the instance is not configured or not connected", 30.0)
        try:
            await self._page(*reader)
        except BudgetExhausted:
            return await self._failed(
                "paused: the monthly call budget is spent", self._owner.budget_wait
            )
        except NeedsReauthorization:
            return await self._failed("paused: the instance needs re-authorization", RETRY_MAX)
        except QuickBooksError as exc:
            wait, self._retry = self._retry, min(RETRY_MAX, self._retry * 2)
            return await self._failed(f"{type(exc).__name__}: {exc}", wait)
        except (OutboxFull, OutboxClosed):
            return OUTBOX_FULL_WAIT
        except OutboxError as exc:
            self._outbox.log_refusal(self.log, "resync page not stored", error=str(exc))
            return 10.0
        self._retry = RETRY_START
        return 0.0

    async def _failed(self, error: str, wait: float) -> float:
        if error != self.job.last_error:
            self.log.warning("resync waits", error=error, retry_in=wait)
            with contextlib.suppress(OutboxError):
                await self._store.note_error(self.job.id, error)
        return wait

    async def _page(self, inst: Instance, client: QuickBooksClient, tokens: TokenManager) -> None:
        job = self.job
        resource = BY_NAME[job.resources[job.done]]
        position = job.position
        objects: list[dict[str, Any]] | None = None
        nxt: Position | None = None
        if position is None and job.since is not None and _cdc_reaches(resource, job.since):
            answer = await client.cdc(
                inst.realm_id, tokens, [resource.entity], qbtime.parse(job.since)
            )
            objects = [
                obj
                for element in answer.get("CDCResponse") or ()
                for block in element.get("QueryResponse") or ()
                for obj in block.get(resource.entity) or ()
            ]
            if len(objects) >= CDC_CAP:
                # The answer may have left changes out: Query reads the window whole instead.
                self.log.info("CDC answer at its cap; reading with Query", resource=resource.name)
                objects = None
        if objects is None:
            position = position or Position()
            text = paging.statement(
                resource.entity,
                position,
                since=job.since,
                with_inactive=resource.entity in NAME_LISTS,
            )
            answer = await client.query(inst.realm_id, tokens, text)
            found = (answer.get("QueryResponse") or {}).get(resource.entity) or []
            objects, nxt = paging.advance(position, found)
        events = self._events(inst, resource, objects)
        done = job.done + (nxt is None)
        await self._outbox.accept(
            events, dedupe=False, also=progress(job.id, done, nxt, len(events))
        )
        if events:
            self._owner.on_accepted(job.instance)
        if nxt is None:
            self.log.info("resync resource read", resource=resource.name, done=done)

    def _events(
        self, inst: Instance, resource: Resource, objects: list[dict[str, Any]]
    ) -> list[Event]:
        events = []
        for obj in objects:
            try:
                change = change_from_object(inst.realm_id, resource.entity, obj)
            except ValueError as exc:
                self.log.warning("object skipped: not understood", error=str(exc))
                continue
            events.append(make_event(inst.name, resource.name, change))
        return events

    async def _finish(self) -> None:
        """Once every event the job stored has left the outbox (delivered or dead), the
        RESYNC event, and the job's end in the same transaction."""
        while not self._stop.is_set():
            try:
                job = self._store.get(self.job.id)
                if job is None:
                    return
                if not self._store.undelivered(job.instance, job.last_seq):
                    await self._accept_end(job)
                    return
            except (OutboxFull, OutboxClosed):
                pass
            except OutboxError as exc:
                self._outbox.log_refusal(self.log, "resync end not stored", error=str(exc))
            await _pause(self._stop, DRAIN_CHECK)

    async def _accept_end(self, job: Job) -> None:
        reader = self._owner.reader(job.instance)
        inst = reader[0] if reader is not None else None
        now = time.time()
        state = CANCELLED if job.cancel else COMPLETED
        realm = inst.realm_id if inst is not None else ""
        event = resync_event(
            job.instance,
            Resync(
                status=ResyncStatus.CANCELLED if job.cancel else ResyncStatus.COMPLETED,
                resync_id=job.id,
                realm_id=realm,
                resources=job.resources,
                objects=job.objects,
                since=job.since,
                started=_iso(job.started_at or job.created_at),
                finished=_iso(now),
            ),
        )
        # An instance with notifications off would hold the event forever: end without it.
        sends = inst is not None and inst.event.notification.enabled
        await self._outbox.accept([event] if sends else [], also=finish(job.id, state, now))
        if sends:
            self._owner.on_accepted(job.instance)
        self.log.info("resync " + state, objects=job.objects, event_id=event.event_id)


def _cdc_reaches(resource: Resource, since: str) -> bool:
    moment = qbtime.parse(since)
    return resource.cdc and moment > dt.datetime.now(dt.UTC) - CDC_HORIZON


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
