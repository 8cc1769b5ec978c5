"""The chaos run's load: a callback receiver with moods, the sandbox changer, the webhook poster.

Each runs in its own thread with its own seeded `random.Random`, drawn from the run's seed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import random
import threading
import time
import urllib.error
from typing import Any

import orjson
from aiohttp import web
from chaos_checks import Post, Posted
from harness import Receiver, SandboxProcess, legacy_body, post_webhook
from qbo_events.sandbox import catalog

REALM_1 = "9341453908128517"
REALM_2 = "4620816366771202"
TIMEOUT = 3.0  # delivery.timeout: a long hang outlasts it, a short one stays well inside it


class MoodyReceiver(Receiver):
    """A callback endpoint that answers 200 for a while, then fails, then hangs, at random.

    Each 2xx is recorded with when its request began and whether it was answered after the
    daemon's timeout (the daemon then counts it as failed and sends it again)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)  # used on the receiver's loop only
        self.calm = False
        self._mood = "ok"
        self._mood_until = 0.0
        self.answers: dict[str, int] = {}

    def _next_mood(self, now: float) -> str:
        if self.calm:
            return "ok"
        if now >= self._mood_until:
            self._mood = self.rng.choices(["ok", "fail", "hang"], [6, 2, 2])[0]
            span = {"ok": (0.5, 3.0), "fail": (0.2, 1.5), "hang": (0.3, 2.0)}[self._mood]
            self._mood_until = now + self.rng.uniform(*span)
        return self._mood

    async def _handle(self, request: web.Request) -> web.Response:
        began = time.time()
        body = await request.read()
        event_id = request.headers.get("webhook-id", "")
        mood = self._next_mood(began)
        status, delay = 200, 0.0
        if mood == "fail" or (mood == "ok" and self.rng.random() < 0.03):
            status = self.rng.choice([500, 503])
        elif mood == "hang":
            if self.rng.random() < 0.5:
                delay = self.rng.uniform(0.02, 0.3)
            else:
                status, delay = 503, TIMEOUT + 0.5
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
            self.answers[str(status)] = self.answers.get(str(status), 0) + 1
        if status == 200:
            ok = self._verify(body, request.headers)
            at = time.time()
            transport = request.transport
            message = orjson.loads(body)["message"]
            event = message["events"][0]
            with self._lock:
                if not ok:
                    self.bad_signatures += 1
                self.deliveries.append(
                    {
                        "id": event_id,
                        "began": began,
                        "at": at,
                        # The sender had gone (timed out, or was killed) before this 2xx.
                        "late": at - began > TIMEOUT * 0.75
                        or transport is None
                        or transport.is_closing(),
                        "instance": message["instanceId"],
                        "key": (
                            event["objectType"], event["objectId"], event["eventType"],
                            event["date"],
                        ),
                        "body": {"message": message},
                    }
                )  # fmt: skip
        return web.Response(status=status)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.deliveries)


class Changer(threading.Thread):
    """Changes the sandbox's companies: the polled entities half the time, any entity else."""

    def __init__(self, sandbox: SandboxProcess, seed: int, pause: float = 0.08) -> None:
        super().__init__(daemon=True, name="chaos-changer")
        self.sandbox = sandbox
        self.rng = random.Random(seed)
        self.pause = pause
        self.halt = threading.Event()
        self.made = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.uniform(0.0, 2 * self.pause)):
                realm = self.rng.choice([REALM_1, REALM_2])
                if self.rng.random() < 0.02:  # a burst: one poll meets many new objects
                    count = self.rng.randint(20, 60)
                    self.made += len(
                        self.sandbox.change("Invoice", "Create", count, realm_id=realm)
                    )
                    continue
                entity = self.rng.choice(
                    ["Invoice", "Customer"] if self.rng.random() < 0.5 else catalog.ENTITIES
                )
                operation = self.rng.choice(catalog.operations(entity))
                try:
                    self.made += len(self.sandbox.change(entity, operation, realm_id=realm))
                except urllib.error.HTTPError:  # nothing left that can take it
                    self.made += len(self.sandbox.change(entity, "Create", realm_id=realm))
        except BaseException as exc:  # the main thread reports it
            self.error = exc


class Poster(threading.Thread):
    """Posts signed legacy webhooks of its own, one at a time, and records every answer.

    Its objects exist nowhere in the sandbox: realm 1's Estimates go to the webhook instance,
    realm 2's Invoices to the hybrid one, and realm 2's Estimates to nobody (filtered out)."""

    POOL = 12

    def __init__(self, url: str, seed: int, pause: float = 0.08) -> None:
        super().__init__(daemon=True, name="chaos-poster")
        self.url = url
        self.rng = random.Random(seed)
        self.pause = pause
        self.halt = threading.Event()
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._clock = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
        self.error: BaseException | None = None

    def _entity(self) -> Posted:
        realm, name, base = self.rng.choice(
            [(REALM_1, "Estimate", 880000), (REALM_2, "Invoice", 770000),
             (REALM_2, "Estimate", 660000)]
        )  # fmt: skip
        self._clock += dt.timedelta(seconds=1)  # every post's entities are distinct events
        date = self._clock.isoformat().replace("+00:00", "Z")
        return realm, name, str(base + self.rng.randrange(self.POOL)), "Update", date

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.uniform(0.0, 2 * self.pause)):
                entities = [self._entity() for _ in range(self.rng.choice([1, 1, 2, 3]))]
                # One notification per realm, in the order the realms first appear: the order
                # the daemon reads the entities in, which their positions must follow.
                realms = list(dict.fromkeys(e[0] for e in entities))
                entities.sort(key=lambda e: realms.index(e[0]))
                post = Post(index=len(self.posts), entities=entities)
                with self._lock:
                    self.posts.append(post)
                try:
                    post.status = post_webhook(self.url, _legacy_body(realms, entities))
                except (OSError, http.client.HTTPException):
                    post.status = None  # refused or cut off: maybe accepted, not owed
                post.answered_at = time.time()
        except BaseException as exc:
            self.error = exc

    def snapshot(self) -> list[Post]:
        with self._lock:
            return list(self.posts)


def _legacy_body(realms: list[str], entities: list[Posted]) -> bytes:
    """harness.legacy_body's shape, with one notification per realm."""
    notifications = [
        orjson.loads(legacy_body(realm, *(e[1:] for e in entities if e[0] == realm)))[
            "eventNotifications"
        ][0]
        for realm in realms
    ]
    return orjson.dumps({"eventNotifications": notifications})
