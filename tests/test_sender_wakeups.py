"""The dispatcher's wake-ups, in process with a real outbox: a delivery that finishes while the
dispatcher waits on a read is not forgotten, and waiting on storage counts as progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from qbo_events.config import DeliveryConfig
from qbo_events.events import Change, EventType, Source, event_id
from qbo_events.events import Event as QboEvent
from qbo_events.metrics import Metrics
from qbo_events.outbox import Outbox, Row
from qbo_events.sinks import sender as sender_module
from qbo_events.sinks.sender import Sender, Target
from test_outbox_faults import wait_until

pytestmark = pytest.mark.anyio


def event(object_id: str, kind: EventType) -> QboEvent:
    change = Change(
        realm_id="1",
        entity="Invoice",
        object_id=object_id,
        event_type=kind,
        date="2026-01-01T00:00:00Z",
        source=Source.WEBHOOK,
        raw={"Id": object_id},
    )
    return QboEvent(
        event_id=event_id("acme", change), instance="acme", object_type="invoices", change=change
    )


class LateAnswers(Outbox):
    """An outbox whose `due()` answers arrive late, as from a busy disk: the rows are read at
    once, the caller hears of them `delay` seconds later."""

    delay = 0.0

    async def due(
        self, instance: str, limit: int, skip: Sequence[int] = ()
    ) -> tuple[list[Row], float | None]:
        answer = await super().due(instance, limit, skip)
        await asyncio.sleep(self.delay)
        return answer


async def test_a_delivery_finishing_during_a_read_still_releases_the_next_event_of_its_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the rescan's backstop, a forgotten wake-up would hold the second event for good.
    monkeypatch.setattr(sender_module, "_RESCAN", 3600.0)
    received: list[tuple[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        first = orjson.loads(await request.read())["message"]["events"][0]
        what = (first["objectId"], first["eventType"])
        if what == ("1", "CREATED"):
            await asyncio.sleep(0.4)  # answered while the dispatcher waits on its next read
        received.append(what)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with LateAnswers(tmp_path / "outbox.sqlite3") as outbox:
            await outbox.accept(
                [
                    event("1", EventType.CREATED),
                    event("2", EventType.CREATED),
                    event("1", EventType.UPDATED),
                ]
            )
            outbox.delay = 0.8
            async with aiohttp.ClientSession() as http:
                sender = Sender(
                    outbox,
                    http,
                    delivery=DeliveryConfig(),
                    targets={"acme": Target(instance="acme", url=url, key=None, tags=())},
                    metrics=Metrics(),
                )
                stop = asyncio.Event()
                async with asyncio.TaskGroup() as group:
                    group.create_task(sender.run(stop))
                    with contextlib.suppress(AssertionError):  # the asserts below say what came
                        await wait_until(lambda: len(received) >= 3, 20, "three deliveries")
                    stop.set()
        assert received[-1:] == [("1", "UPDATED")], received
        assert sorted(received) == [("1", "CREATED"), ("1", "UPDATED"), ("2", "CREATED")]
    finally:
        await runner.cleanup()


async def test_waiting_for_storage_is_progress_for_the_watchdog(tmp_path: Path) -> None:
    """While the outbox cannot write, the dispatcher waits on purpose; once storage is back,
    its last dispatch must not look as old as the outage."""
    state: dict[str, Any] = {}
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox, aiohttp.ClientSession() as http:
        clock = [1000.0]
        sender = Sender(
            outbox,
            http,
            delivery=DeliveryConfig(),
            targets={"acme": Target(instance="acme", url="http://127.0.0.1:9/", key=None, tags=())},
            metrics=Metrics(),
            clock=lambda: clock[0],
        )
        outbox._db.writable = False  # what a full disk leaves behind
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(sender.run(stop))
            await asyncio.sleep(0.1)
            clock[0] += 120.0  # two minutes of outage
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: sender.last_dispatch_at >= 1100.0, 20, "a round")
            state["seen"] = sender.last_dispatch_at
            stop.set()
            outbox._db.writable = True
    assert state["seen"] >= 1100.0
