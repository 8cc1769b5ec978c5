"""The webhook emitter: legacy or CloudEvents bodies, signed, retried on Intuit's schedule."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, Literal

import aiohttp
import orjson

from .clock import utc_z
from .company import Notification

WebhookFormat = Literal["legacy", "cloudevents"]

# Intuit's published schedule after a failed POST; it then stays at 6 hours.
RETRY_SCHEDULE: Final = (10.0, 20.0, 30.0, 300.0, 1200.0, 7200.0, 14400.0, 21600.0)

_CLOUDEVENT_VERBS: Final = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}


def retry_delay(attempt: int, scale: float = 1.0) -> float:
    """Seconds to wait after the `attempt`-th failure (0-based)."""
    return RETRY_SCHEDULE[min(attempt, len(RETRY_SCHEDULE) - 1)] * scale


def sign(body: bytes, verifier_token: str) -> str:
    """`intuit-signature`: base64 of HMAC-SHA256 over the raw body, keyed by the verifier token."""
    digest = hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def legacy_body(batch: Sequence[Notification]) -> bytes:
    """One `eventNotifications` entry per realm, in the order the realms first appear."""
    by_realm: dict[str, list[dict[str, str]]] = {}
    for note in batch:
        entity = {
            "name": note.entity,
            "id": note.object_id,
            "operation": note.operation,
            "lastUpdated": utc_z(note.last_updated, 3),
        }
        if note.deleted_id is not None:
            entity["deletedId"] = note.deleted_id
        by_realm.setdefault(note.realm_id, []).append(entity)
    notifications = [
        {"realmId": realm, "dataChangeEvent": {"entities": entities}}
        for realm, entities in by_realm.items()
    ]
    return orjson.dumps({"eventNotifications": notifications})


def cloudevents_body(batch: Sequence[Notification], source: str) -> bytes:
    events = []
    for note in batch:
        verb = _CLOUDEVENT_VERBS.get(note.operation, note.operation.lower())
        data = {} if note.deleted_id is None else {"deletedid": note.deleted_id}
        events.append(
            {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": source,
                "type": f"qbo.{note.entity.lower()}.{verb}.v1",
                "datacontenttype": "application/json",
                "time": utc_z(note.last_updated, 9),
                "intuitentityid": note.object_id,
                "intuitaccountid": note.realm_id,
                "data": data,
            }
        )
    return orjson.dumps(events)


class WebhookEmitter:
    """Posts pending notifications in order; a batch that is not acknowledged blocks the rest.

    A batch is one body, signed once and re-sent byte for byte (so CloudEvents ids repeat) until
    the endpoint answers 200 within `timeout` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        fmt: WebhookFormat,
        verifier_token: str,
        client_id: str,
        retry_scale: float = 1.0,
        batch_delay: float = 0.2,
        max_batch: int = 100,
        timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.fmt = fmt
        self._verifier_token = verifier_token
        digest = hashlib.sha256(client_id.encode()).digest()
        self._source = "intuit." + base64.b64encode(digest).decode()
        self.retry_scale = retry_scale
        self._batch_delay = batch_delay
        self._max_batch = max_batch
        self._timeout = timeout
        self._pending: deque[Notification] = deque()
        self._arrived = asyncio.Event()
        self._flush = asyncio.Event()
        self.posts = 0
        self.acks = 0
        self.failures = 0
        self.events_acked = 0
        self.last_status: int | None = None
        self.held = False

    def hold(self, held: bool) -> None:
        """While held, notifications queue up and nothing is posted (a delayed Intuit)."""
        self.held = held
        self._arrived.set()

    def enqueue(self, note: Notification) -> None:
        self._pending.append(note)
        self._arrived.set()

    def flush(self) -> None:
        """Send now: skip the batching delay or the wait before the next retry."""
        self._flush.set()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "format": self.fmt,
            "posts": self.posts,
            "acks": self.acks,
            "failures": self.failures,
            "events_acked": self.events_acked,
            "pending": len(self._pending),
            "last_status": self.last_status,
            "held": self.held,
        }

    def __repr__(self) -> str:
        return (
            f"<WebhookEmitter {self.fmt} posts={self.posts} acks={self.acks} "
            f"failures={self.failures} pending={len(self._pending)}>"
        )

    def encode(self, batch: Sequence[Notification]) -> bytes:
        if self.fmt == "cloudevents":
            return cloudevents_body(batch, self._source)
        return legacy_body(batch)

    async def deliver_forever(self) -> None:
        """Runs until cancelled; the caller's task group owns it."""
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                while not self._pending or self.held:
                    self._arrived.clear()
                    await self._arrived.wait()
                await self._pause(self._batch_delay)
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending[i] for i in range(count)]
                body = self.encode(batch)
                attempt = 0
                while not await self._post(session, body):
                    await self._pause(retry_delay(attempt, self.retry_scale))
                    attempt += 1
                for _ in range(count):
                    self._pending.popleft()
                self.events_acked += count

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._flush.wait()
        except TimeoutError:
            pass
        self._flush.clear()

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> bool:
        headers = {
            "Content-Type": "application/json",
            "intuit-signature": sign(body, self._verifier_token),
            "User-Agent": "Intuit-Webhooks-Sandbox",
        }
        self.posts += 1
        try:
            async with session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                self.last_status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.last_status = None
            self.failures += 1
            return False
        if self.last_status != 200:
            self.failures += 1
            return False
        self.acks += 1
        return True
