"""Endpoint health notices to `delivery.alert_url`: signed JSON, best effort, outside the outbox.

A notice is tried a few times and then dropped (and logged): alerts are not events, and a notice
held across restarts would arrive stale. They are signed like deliveries (Standard Webhooks
headers, and `Elements-Webhook-Signature`) with `delivery.alert_key`; without one they go
unsigned. Config validation keeps alert_url apart from every callback URL, so that a notice never
goes to the endpoint it is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Final

import aiohttp
import msgspec
import structlog

from qbo_events import __version__
from qbo_events.config import DeliveryConfig
from qbo_events.sinks import signing
from qbo_events.sinks.endpoint_state import Notice

log = structlog.get_logger("qbo_events.alerts")

# Seconds to wait before each retry of a notice; its attempts are one more than this.
RETRY_DELAYS: Final = (1.0, 5.0, 30.0)
TIMEOUT: Final = 10.0
# Notices waiting at most; past this the oldest are the ones dropped.
QUEUE_LIMIT: Final = 1000


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    endpoint: str
    notice: Notice


def body_of(alert: Alert) -> bytes:
    notice = alert.notice
    return msgspec.json.encode(
        {
            "type": notice.type,
            "instance": alert.instance,
            "endpoint": alert.endpoint,
            "since": _iso(notice.since),
            "consecutive_failures": notice.consecutive_failures,
            "at": _iso(notice.at),
        }
    )


def headers_of(body: bytes, msg_id: str, key: bytes | None, timestamp: int) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"qbo-events/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if key is not None:
        headers["webhook-signature"] = signing.standard_signature(key, msg_id, timestamp, body)
        headers["Elements-Webhook-Signature"] = signing.elements_signature(key, body)
    return headers


class Alerts:
    def __init__(self, http: aiohttp.ClientSession, delivery: DeliveryConfig) -> None:
        self._http = http
        # None: the stop, queued behind the notices (each then dropped, not tried).
        self._queue: asyncio.Queue[Alert | None] = asyncio.Queue()
        self.sent = 0
        self.dropped = 0
        self.configure(delivery)

    def configure(self, delivery: DeliveryConfig) -> None:
        self._url = delivery.alert_url
        self._key = signing.key_bytes(delivery.alert_key) if delivery.alert_key else None

    def send(self, alert: Alert) -> None:
        """Queue a notice (nothing when no alert_url is set)."""
        if not self._url:
            return
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(alert)

    async def run(self, stop: asyncio.Event) -> None:
        """Send queued notices in order until `stop`; those still queued then are dropped."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._stop_on(stop))
            while (alert := await self._queue.get()) is not None:
                await self._deliver(alert, stop)

    async def _stop_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._queue.put_nowait(None)

    async def _deliver(self, alert: Alert, stop: asyncio.Event) -> None:
        body = body_of(alert)
        # One id for every try of a notice, so that a receiver can drop repeats.
        msg_id = f"alert_{uuid.uuid4().hex}"
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
            if stop.is_set() or not self._url:
                break
            error = await self._post(body, msg_id)
            if error is None:
                self.sent += 1
                return
            log.warning("alert not taken", type=alert.notice.type, error=error)
        self.dropped += 1
        log.error("alert dropped", type=alert.notice.type, instance=alert.instance)

    async def _post(self, body: bytes, msg_id: str) -> str | None:
        """Why the post failed, or None when the alert receiver answered 2xx."""
        headers = headers_of(body, msg_id, self._key, int(time.time()))
        try:
            async with self._http.post(
                self._url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {TIMEOUT} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "queued": self._queue.qsize()}


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
