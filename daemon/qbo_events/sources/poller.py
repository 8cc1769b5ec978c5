"""Per-(instance, resource) polling loops: CDC or paged Query since the cursor, into the outbox.

Each poll re-reads `overlap` seconds before its cursor, turns what it finds into events, and
commits the events and the new cursor in one outbox transaction, so a crash keeps both or
neither. The new cursor is our clock taken *before* the call: a change that lands while the
call runs is read again next time rather than skipped, and the outbox's dedupe removes repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any, Final

import structlog

from qbo_events import qbtime
from qbo_events.config import Instance
from qbo_events.errors import (
    NeedsReauthorization,
    OutboxClosed,
    OutboxError,
    OutboxFull,
    QuickBooksError,
    QuickBooksUnavailable,
)
from qbo_events.events import Change, Source
from qbo_events.metrics import Metrics
from qbo_events.normalize import change_from_object
from qbo_events.outbox import Cursor, Outbox
from qbo_events.quickbooks.client import QuickBooksClient, format_changed_since
from qbo_events.quickbooks.oauth import TokenManager
from qbo_events.quickbooks.resources import Resource
from qbo_events.routing import poll_events
from qbo_events.sources.coalesce import CDC_CAP, CdcCoalescer

log = structlog.get_logger("qbo_events.poller")

PAGE: Final = 1000
# Rows re-read at a page boundary inside one second's objects, the one place paging goes by
# offset: objects changing meanwhile shift the rest back by as many (dedupe drops repeats).
PAGE_OVERLAP: Final = 50
# CDC refuses windows older than 30 days; past this, Query reads the live objects instead.
CDC_HORIZON: Final = dt.timedelta(days=29, hours=23)
# Entities QuickBooks "deletes" by setting Active=false, which Query hides unless asked.
NAME_LISTS: Final = frozenset(
    {
        "Account", "Class", "CompanyCurrency", "Customer", "Department", "Employee", "Item",
        "PaymentMethod", "TaxCode", "TaxRate", "Term", "Vendor",
    }
)  # fmt: skip
BACKOFF_START: Final = 5.0
OUTBOX_FULL_WAIT: Final = 1.0
# Each poll while the outbox cannot write costs QuickBooks calls for nothing: not too often.
OUTBOX_TROUBLE_WAIT: Final = 10.0


class LoopState:
    STARTING = "starting"
    WAITING = "waiting"
    POLLING = "polling"
    ERROR = "error"
    REAUTH = "needs re-authorization"
    STOPPED = "stopped"


class ResourceLoop:
    """Polls one resource of one instance every `refresh_interval` (or `slow_interval`)."""

    def __init__(
        self,
        *,
        instance: Instance,
        resource: Resource,
        client: QuickBooksClient,
        tokens: TokenManager,
        outbox: Outbox,
        metrics: Metrics,
        on_accepted: Callable[[str], None],
        on_paused: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        coalescer: CdcCoalescer | None = None,
    ) -> None:
        self.instance = instance
        self.resource = resource
        self.client = client
        self.tokens = tokens
        self._outbox = outbox
        self._metrics = metrics
        self._on_accepted = on_accepted
        # Told when a refused token pauses this loop: the instance's owner logs it once.
        self._on_paused = on_paused
        self._clock = clock
        # Shares this loop's CDC reads with the other loops of its company that fall due with it.
        self._coalescer = coalescer
        # When the shared read this poll joined opened: the loops that shared it wait their
        # next interval from this common start, so they keep falling due together.
        self._shared_start: float | None = None
        self.stopped = False
        # The monthly budget's factor on the configured interval; math.inf pauses the loop.
        self.stretch = 1.0
        self._server_start: float | None = None
        self._wakeup = asyncio.Event()
        self.state = LoopState.STARTING
        self.cursor: str | None = None
        self.last_poll_at: str | None = None
        self.last_success_at: str | None = None
        self.last_error: str | None = None
        self.events = 0
        self.polls = 0
        # time.monotonic() when the poll under way began or last got an answer (the watchdog's).
        self.progress_at = 0.0
        self.log = log.bind(instance=instance.name, resource=resource.name)
        # Labelled by resource only: one series per (instance, resource) would be 22,000 of
        # them at a thousand instances, and every scrape would have to render them all.
        self._poll_duration = metrics.poll_duration.labels(resource.name)

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_poll_at": self.last_poll_at,
            "last_success_at": self.last_success_at,
            "cursor": self.cursor,
            "last_error": self.last_error,
            "events": self.events,
        }

    @property
    def interval(self) -> float:
        """Seconds between polls, read afresh so that a reload applies to the wait under way."""
        return self.instance.event.poller.interval_for(self.resource.name) * self.stretch

    def restretch(self, factor: float) -> None:
        """A new budget factor: the current wait is re-timed at once."""
        if factor != self.stretch:
            self.stretch = factor
            self._wakeup.set()

    def __repr__(self) -> str:
        return f"<ResourceLoop {self.instance.name}/{self.resource.name} {self.state}>"

    # -- the loop ------------------------------------------------------------------------------

    def halt(self) -> None:
        """Ask the loop to end after its current poll."""
        self.stopped = True
        self._wakeup.set()

    def reconfigure(self, instance: Instance) -> None:
        """New settings (interval, overlap): the loop's current wait is re-timed at once."""
        self.instance = instance
        self._wakeup.set()

    async def run(self, first_delay: float) -> None:
        """Poll until halted; the first poll after `first_delay` seconds."""
        try:
            # The first cursor is the start time, not the first poll's, so that the changes
            # made while the first polls are spread out are not skipped.
            with contextlib.suppress(OutboxError):
                await self._cursor(self._clock())
            await self._wait(self._clock(), first_delay)
            backoff = BACKOFF_START
            while not self.stopped:
                started = self._clock()
                pause: float | None = None  # None: the interval, as configured at the time
                try:
                    await self.poll_once()
                    if self._shared_start is not None:
                        started = self._shared_start
                    backoff = BACKOFF_START
                except NeedsReauthorization:
                    self.state = LoopState.REAUTH
                    self.last_error = "refresh token refused (invalid_grant): authorize again"
                    self._on_paused(self.instance.name)
                    pause = math.inf  # until a reload (after `qbo-events authorize`) wakes it
                except (OutboxFull, OutboxClosed) as exc:
                    # Backpressure: nothing advanced; try again soon.
                    self.state = LoopState.WAITING
                    self.last_error = str(exc)
                    pause = OUTBOX_FULL_WAIT
                except OutboxError as exc:
                    # The storage failed (a full disk, say): neither the events nor the cursor
                    # were stored, so the next poll reads the same window again.
                    self.state = LoopState.WAITING
                    self.last_error = f"outbox: {exc}"
                    pause = OUTBOX_TROUBLE_WAIT
                    self._outbox.log_refusal(
                        self.log, "poll's events not stored; polling again later", error=str(exc)
                    )
                except QuickBooksUnavailable as exc:
                    self._failed(exc)
                    pause, backoff = backoff, backoff * 2
                except QuickBooksError as exc:
                    self._failed(exc)
                except Exception as exc:
                    # Whatever went wrong, this loop must not take the others down with it.
                    self.state = LoopState.ERROR
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.log.exception("poll failed unexpectedly")
                    pause, backoff = backoff, backoff * 2
                await self._wait(started, pause)
        finally:
            self.state = LoopState.STOPPED

    async def _wait(self, since: float, pause: float | None) -> None:
        """Until `since + pause` (never past the interval), or a halt. A reconfigure re-reads
        the interval; it also ends an endless pause, so the loop tries again."""
        while not self.stopped:
            self._wakeup.clear()
            interval = self.interval
            seconds = interval if pause is None else pause
            if not math.isinf(seconds):
                seconds = min(seconds, interval)
            remaining = since + seconds - self._clock()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(remaining) else remaining):
                    await self._wakeup.wait()
            # A wake-up ends an endless pause (a reload may bring new tokens), but not a loop
            # the budget holds until the month turns: that one waits for a finite interval.
            if math.isinf(seconds) and not math.isinf(interval) and not self.stopped:
                return

    def _failed(self, exc: QuickBooksError) -> None:
        self.state = LoopState.ERROR
        tid = f" (intuit_tid {exc.intuit_tid})" if exc.intuit_tid else ""
        self.last_error = f"{type(exc).__name__}: {exc}{tid}"
        self.log.warning("poll failed", error=self.last_error)

    # -- one poll ------------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """One poll; returns how many new events it stored."""
        self.state = LoopState.POLLING
        self.progress_at = time.monotonic()
        now = self._clock()
        self.last_poll_at = _iso(now)
        cursor = await self._cursor(now)
        since = cursor - dt.timedelta(seconds=self.instance.event.poller.overlap)
        began = time.monotonic()
        self._server_start = None
        self._shared_start = None
        if self.resource.cdc and since > _utc(now) - CDC_HORIZON:
            objects = await self._cdc(since)
        else:
            if self.resource.cdc:
                self.log.warning(
                    "cursor older than the 30 days CDC keeps; reading live objects with Query"
                    " (hard deletes in the gap cannot be recovered)",
                    cursor=self.cursor,
                )
            objects = await self._query(since)
        changes = self._changes(objects)
        events = poll_events(self.instance.name, self.resource.name, changes)
        # The next poll starts where QuickBooks' clock stood when this one began, or ours if
        # that is earlier: a host clock running ahead must not step over changes.
        new_cursor = _iso(min(now, self._server_start or now))
        new = await self._outbox.accept(
            events, cursor=Cursor(self.instance.name, self.resource.name, new_cursor)
        )
        self._poll_duration.observe(time.monotonic() - began)
        self._metrics.events_accepted.labels(Source.POLLING.value).inc(new)
        self._metrics.events_duplicate.labels(Source.POLLING.value).inc(len(events) - new)
        self.cursor = new_cursor
        self.polls += 1
        self.events += new
        self.state = LoopState.WAITING
        self.last_success_at = _iso(self._clock())
        self.last_error = None
        if new:
            self._on_accepted(self.instance.name)
            self.log.info("polled", found=len(objects), new=new)
        return new

    async def _cursor(self, now: float) -> dt.datetime:
        # After the first poll the loop holds its cursor; before it, the outbox does.
        stored = self.cursor or await self._outbox.get_cursor(
            self.instance.name, self.resource.name
        )
        if stored is not None:
            self.cursor = stored
            return qbtime.parse(stored)
        # First start of this (instance, resource): no backfill unless `since` asks for one.
        first = self.instance.event.poller.since_time or _utc(now)
        self.cursor = _iso(first.timestamp())
        await self._outbox.accept(
            [], cursor=Cursor(self.instance.name, self.resource.name, self.cursor)
        )
        return first

    async def _cdc(self, since: dt.datetime) -> list[dict[str, Any]]:
        entity = self.resource.entity
        if self._coalescer is not None and self._steady(since):
            part = await self._coalescer.cdc(entity, since)
            self.progress_at = time.monotonic()
            self._note_server_time(part.answer, part.asked)
            self._shared_start = part.opened
            if not part.capped:
                return await self._complete(part.objects, since)
            # A shared answer at its cap may have left out any entity's changes: read alone.
            self.log.info("shared CDC answer at its cap; reading this entity alone")
        asked = time.monotonic()
        answer = await self.client.cdc(self.instance.realm_id, self.tokens, [entity], since)
        self.progress_at = time.monotonic()
        self._note_server_time(answer, asked)
        objects: list[dict[str, Any]] = []
        for element in answer.get("CDCResponse") or ():
            for block in element.get("QueryResponse") or ():
                objects += block.get(entity) or ()
        return await self._complete(objects, since)

    def _steady(self, since: dt.datetime) -> bool:
        """A window of about one interval: a loop catching up (a backfill, an outage) reads alone,
        so that its large answer cannot push the company's shared answer to the cap."""
        span = 2 * self.interval + self.instance.event.poller.overlap + 60
        return since >= _utc(self._clock() - span)

    async def _complete(
        self, objects: list[dict[str, Any]], since: dt.datetime
    ) -> list[dict[str, Any]]:
        if len(objects) < CDC_CAP:
            return objects
        # A full answer may have left changes out, in no promised order. Query completes the
        # window for every live object; the tombstones CDC returned are kept. Hard deletes past
        # the cap are invisible to Query (hybrid mode's webhooks still carry them).
        self.log.info("CDC answer at its cap; completing the window with Query", count=len(objects))
        tombstones = [o for o in objects if o.get("status") == "Deleted"]
        return tombstones + await self._query(since)

    async def _query(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Every live object changed at or after `since`, paged by its LastUpdatedTime: each
        page starts at the last page's newest time, so objects that change while we page
        cannot shift others out of reach. Only a page that is all one second pages by offset."""
        entity = self.resource.entity
        active = " AND Active IN (true, false)" if entity in NAME_LISTS else ""
        objects: list[dict[str, Any]] = []
        start = 1
        while True:
            statement = (
                f"SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime >="
                f" '{format_changed_since(since)}'{active} ORDERBY MetaData.LastUpdatedTime"
                f" STARTPOSITION {start} MAXRESULTS {PAGE}"
            )
            asked = time.monotonic()
            answer = await self.client.query(self.instance.realm_id, self.tokens, statement)
            self.progress_at = time.monotonic()
            self._note_server_time(answer, asked)
            page = (answer.get("QueryResponse") or {}).get(entity) or []
            objects += page
            if len(page) < PAGE:
                return objects
            newest = max(map(_last_updated, page))
            if newest > since:
                since, start = newest, 1  # the repeats at `newest` are dropped as duplicates
            else:
                start += PAGE - PAGE_OVERLAP

    def _note_server_time(self, answer: dict[str, Any], asked: float) -> None:
        """From the poll's first answer: QuickBooks' clock when the request went out, taken as
        the answer's `time` less the round trip."""
        if self._server_start is not None:
            return
        try:
            stamp = qbtime.parse(answer.get("time"))
        except ValueError:
            return
        self._server_start = stamp.timestamp() - (time.monotonic() - asked)

    def _changes(self, objects: list[dict[str, Any]]) -> list[Change]:
        changes = []
        for obj in objects:
            try:
                changes.append(
                    change_from_object(self.instance.realm_id, self.resource.entity, obj)
                )
            except ValueError as exc:
                self.log.warning("object skipped: not understood", error=str(exc), id=obj.get("Id"))
        return changes


def _last_updated(obj: dict[str, Any]) -> dt.datetime:
    meta = obj.get("MetaData")
    try:
        return qbtime.parse(meta.get("LastUpdatedTime") if isinstance(meta, dict) else None)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def _utc(moment: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(moment, dt.UTC)


def _iso(moment: float) -> str:
    return _utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")
