"""One CDC request for the CDC reads of one company that fall due together, split by entity."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from qbo_events.quickbooks.client import QuickBooksClient
from qbo_events.quickbooks.oauth import TokenManager

# CDC's cap counts the objects of all entities of one call together.
CDC_CAP: Final = 1000
# How long the first read of a batch waits for the others: the loops of one company fall due on
# the same timer, so they arrive within a few event-loop turns of each other.
GATHER_WINDOW: Final = 0.05


class CdcPart(NamedTuple):
    """One entity's share of a (possibly shared) CDC answer."""

    objects: list[dict[str, Any]]
    answer: dict[str, Any]  # the whole answer, for its `time`
    asked: float  # time.monotonic() when the request went out
    opened: float  # the clock when the batch opened: the loops' common start of the poll
    capped: bool  # a shared answer at the cap: it may have left this entity's changes out


class _Abandoned(Exception):
    """The read that was to send the batch was cancelled; the others read alone."""


class _Batch:
    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.since: dict[str, dt.datetime] = {}
        self.done: asyncio.Future[tuple[dict[str, Any], float]] = (
            asyncio.get_running_loop().create_future()
        )


class CdcCoalescer:
    """Gathers the CDC reads of one (realm, token manager) into one request per gathering."""

    def __init__(
        self,
        client: QuickBooksClient,
        realm_id: str,
        tokens: TokenManager,
        *,
        window: float = GATHER_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.realm_id = realm_id
        self.tokens = tokens
        self._window = window
        self._clock = clock
        self._open: _Batch | None = None

    async def cdc(self, entity: str, since: dt.datetime) -> CdcPart:
        """`entity`'s changes since `since` (or earlier: repeats are the outbox's to drop)."""
        batch = self._open
        if batch is not None:
            batch.since[entity] = min(since, batch.since.get(entity, since))
            try:
                answer, asked = await asyncio.shield(batch.done)
            except _Abandoned:
                return await self._alone(entity, since)
            return _part(answer, asked, batch, entity)
        batch = self._open = _Batch(self._clock())
        batch.since[entity] = since
        try:
            await asyncio.sleep(self._window)
        except BaseException:
            self._close(batch)
            self._fail(batch, _Abandoned())
            raise
        self._close(batch)
        entities = list(batch.since)
        asked = time.monotonic()
        try:
            answer = await self.client.cdc(
                self.realm_id, self.tokens, entities, min(batch.since.values())
            )
        except asyncio.CancelledError:
            self._fail(batch, _Abandoned())
            raise
        except Exception as exc:
            # Every read of the batch fails as its own call would have.
            self._fail(batch, exc)
            raise
        batch.done.set_result((answer, asked))
        return _part(answer, asked, batch, entity)

    async def _alone(self, entity: str, since: dt.datetime) -> CdcPart:
        opened = self._clock()
        asked = time.monotonic()
        answer = await self.client.cdc(self.realm_id, self.tokens, [entity], since)
        objects = _objects(answer, entity)
        return CdcPart(objects, answer, asked, opened, capped=False)

    def _close(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None

    @staticmethod
    def _fail(batch: _Batch, exc: BaseException) -> None:
        if not batch.done.done():
            batch.done.set_exception(exc)
            batch.done.exception()  # retrieved: a batch of one has nobody else to read it


def _objects(answer: dict[str, Any], entity: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for element in answer.get("CDCResponse") or ():
        for block in element.get("QueryResponse") or ():
            objects += block.get(entity) or ()
    return objects


def _count(answer: dict[str, Any]) -> int:
    total = 0
    for element in answer.get("CDCResponse") or ():
        for block in element.get("QueryResponse") or ():
            total += sum(len(v) for v in block.values() if isinstance(v, list))
    return total


def _part(answer: dict[str, Any], asked: float, batch: _Batch, entity: str) -> CdcPart:
    # A batch of one entity at the cap is the single read of today: its loop completes it
    # with Query. A shared one at the cap sends each loop back to its own CDC read.
    capped = len(batch.since) > 1 and _count(answer) >= CDC_CAP
    return CdcPart(_objects(answer, entity), answer, asked, batch.opened, capped)
