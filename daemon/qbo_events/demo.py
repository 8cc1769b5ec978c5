"""`qbo-events demo`: the sandbox, the daemon (hybrid, two instances) and a verifying receiver.

Everything runs in one process on 127.0.0.1 with a temporary state directory. The simulated
companies change objects for `--duration` seconds; the demo then waits until every change has
been delivered (or a deadline passes), prints a summary, and exits 0 only if nothing is missing
and every signature verified.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from qbo_events import config as config_module
from qbo_events.app import Daemon
from qbo_events.quickbooks.resources import canonical_entity, object_type
from qbo_events.sandbox import ChangeRecord, Sandbox, SandboxOptions

REALMS = ("9130357766900216", "9130357766900217")
SIGNATURE_KEY = "demo-signature-key"
VERIFIER = "demo-verifier-token"
CLIENT_ID, CLIENT_SECRET = "demo-client-id", "demo-client-secret"
POLL_MINUTES = 0.05  # 3 s: the safety net runs often enough to show itself in a short demo
SETTLE_TIMEOUT = 60.0

Key = tuple[str, str, str, str, str]  # realm, objectType, objectId, eventType, date


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of changes (20)")
    parser.add_argument("--rate", type=float, default=4.0, help="changes per second (4)")


def run_command(args: argparse.Namespace) -> int:
    import uvloop

    if args.duration <= 0 or args.rate <= 0:
        print("demo: --duration and --rate must be > 0", file=sys.stderr)
        return 2
    return int(uvloop.run(Demo(args.duration, args.rate, sys.stdout).run()))


class Receiver:
    """The customer's endpoint: verifies both signatures, records what arrived and when."""

    def __init__(self, out: TextIO) -> None:
        secret = "whsec_" + base64.b64encode(SIGNATURE_KEY.encode()).decode()
        self._webhook = Webhook(secret)
        self._out = out
        self.arrivals: dict[Key, float] = {}
        self.deliveries = 0
        self.ids: set[str] = set()
        self.bad_signatures = 0
        self.by_source: dict[str, int] = {"webhook": 0, "polling": 0}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self._webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=401)
        # The Open Connectors header, computed here as a receiver would, not with our signer.
        digest = hmac.new(SIGNATURE_KEY.encode(), body, hashlib.sha256).digest()
        expected = "sha256=" + base64.b64encode(digest).decode()
        if not hmac.compare_digest(expected, request.headers.get("Elements-Webhook-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        message = orjson.loads(body)["message"]
        self.deliveries += 1
        self.ids.add(message["eventId"])
        self.by_source[message["source"]] = self.by_source.get(message["source"], 0) + 1
        for event in message["events"]:
            key = (
                message["realmId"],
                event["objectType"],
                event["objectId"],
                event["eventType"],
                event["date"],
            )
            self.arrivals.setdefault(key, time.time())
            self._out.write(
                f"  {message['instanceId']:<8} {event['eventType']:<8} "
                f"{event['objectType']}/{event['objectId']:<6} via {message['source']}\n"
            )
        return web.Response(status=204)


class Demo:
    def __init__(self, duration: float, rate: float, out: TextIO) -> None:
        self.duration = duration
        self.rate = rate
        self.out = out
        self.made_at: dict[int, float] = {}

    async def run(self) -> int:
        receiver = Receiver(self.out)
        receiver_port, webhook_port, health_port = _free_ports(3)
        sandbox = Sandbox(
            SandboxOptions(
                realm_ids=REALMS,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                verifier_token=VERIFIER,
                webhook_url=f"http://127.0.0.1:{webhook_port}/webhooks/quickbooks",
                seed=5,
                rate=0.0,
            )
        )
        app = web.Application()
        app.router.add_post("/events", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
        with tempfile.TemporaryDirectory(prefix="qbo-events-demo-") as tmp:
            try:
                await sandbox.start()
                path = Path(tmp) / "config.toml"
                path.write_text(
                    _config_text(Path(tmp), sandbox, receiver_port, webhook_port, health_port)
                )
                daemon = Daemon(config_module.load(path), path)
                stop = asyncio.Event()
                async with asyncio.TaskGroup() as group:
                    group.create_task(sandbox.run(stop), name="sandbox")
                    daemon_task = group.create_task(daemon.run(), name="daemon")
                    try:
                        missing = await self._drive(sandbox, receiver, daemon_task)
                    finally:
                        daemon.request_stop()
                        await daemon_task
                        stop.set()
            finally:
                await runner.cleanup()
        return self._summary(sandbox, receiver, missing)

    async def _drive(
        self, sandbox: Sandbox, receiver: Receiver, daemon_task: asyncio.Task[int]
    ) -> set[Key]:
        self.out.write(
            f"qbo-events demo: 2 companies changing {self.rate:g} objects/s for "
            f"{self.duration:g} s; hybrid delivery (webhooks + polling every "
            f"{POLL_MINUTES * 60:g} s)\n"
        )
        # Let the pollers take their first cursors before the companies start changing.
        await asyncio.sleep(POLL_MINUTES * 60 + 1)
        sandbox.set_rate(self.rate)
        started = time.monotonic()
        while time.monotonic() - started < self.duration and not daemon_task.done():
            self._stamp(sandbox)
            await asyncio.sleep(0.1)
        sandbox.set_rate(0)
        self._stamp(sandbox)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        missing = self._missing(sandbox, receiver)
        while missing and time.monotonic() < deadline and not daemon_task.done():
            self._progress(sandbox, receiver, missing)
            await asyncio.sleep(0.5)
            missing = self._missing(sandbox, receiver)
        return missing

    def _stamp(self, sandbox: Sandbox) -> None:
        now = time.time()
        for record in sandbox.change_log():
            self.made_at.setdefault(record.seq, now)

    def _progress(self, sandbox: Sandbox, receiver: Receiver, missing: set[Key]) -> None:
        self.out.write(
            f"... {len(sandbox.change_log())} changes made, {receiver.deliveries} delivered, "
            f"waiting for {len(missing)}\n"
        )

    def _missing(self, sandbox: Sandbox, receiver: Receiver) -> set[Key]:
        return set(_expected(sandbox.change_log())) - set(receiver.arrivals)

    def _summary(self, sandbox: Sandbox, receiver: Receiver, missing: set[Key]) -> int:
        changes = sandbox.change_log()
        expected = _expected(changes)
        latencies = [
            receiver.arrivals[key] - self.made_at[seq]
            for key, seq in expected.items()
            if key in receiver.arrivals and seq in self.made_at
        ]
        duplicates = receiver.deliveries - len(receiver.ids)
        rows = [
            ("changes made", str(len(changes))),
            ("events expected", str(len(expected))),
            ("events delivered", str(len(receiver.ids))),
            ("  first via webhook", str(receiver.by_source.get("webhook", 0))),
            ("  first via polling", str(receiver.by_source.get("polling", 0))),
            ("missing", str(len(missing))),
            ("duplicate deliveries", str(duplicates)),
            ("signature failures", str(receiver.bad_signatures)),
            ("latency p50", _ms(latencies, 50)),
            ("latency p99", _ms(latencies, 99)),
        ]
        self.out.write("\nsummary\n")
        for name, value in rows:
            self.out.write(f"  {name:<22} {value:>8}\n")
        ok = not missing and receiver.bad_signatures == 0 and bool(changes)
        self.out.write("every change delivered\n" if ok else "NOT every change was delivered\n")
        return 0 if ok else 1


def _expected(changes: list[ChangeRecord]) -> dict[Key, int]:
    """The events a correct hybrid daemon must deliver: every change QuickBooks sends a webhook
    for, and, for the rest (tax codes and rates: polling only), each object's latest state."""
    expected: dict[Key, int] = {}
    latest: dict[tuple[str, str, str], ChangeRecord] = {}
    for record in changes:
        if record.webhook:
            expected[_key(record)] = record.seq
        else:
            latest[(record.realm_id, record.entity, record.object_id)] = record
    for record in latest.values():
        expected[_key(record)] = record.seq
    return expected


def _key(record: ChangeRecord) -> Key:
    kind = object_type(canonical_entity(record.entity))
    return (record.realm_id, kind, record.object_id, record.event_type.value, record.last_updated)


def _ms(values: list[float], percentile: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.0f} ms"
    cut = statistics.quantiles(values, n=100, method="inclusive")[percentile - 1]
    return f"{max(cut, 0) * 1000:.0f} ms"


def _free_ports(count: int) -> list[int]:
    sockets = []
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]


def _config_text(
    state: Path, sandbox: Sandbox, receiver_port: int, webhook_port: int, health_port: int
) -> str:
    instances = ""
    for index, realm in enumerate(REALMS):
        instances += f"""
[[instances]]
name = "company{index + 1}"
realm_id = "{realm}"
refresh_token = "{sandbox.refresh_token(realm)}"
tags = ["demo"]
event.vendor.type = "hybrid"
event.notification.callback.url = "http://127.0.0.1:{receiver_port}/events"
event.notification.signature.key = "{SIGNATURE_KEY}"
event.poller.refresh_interval = {POLL_MINUTES}
event.poller.overlap = 5
"""
    return f"""state_dir = "{state / "state"}"
[log]
level = "warning"
format = "console"
[http]
webhook_listen = "127.0.0.1:{webhook_port}"
health_listen = "127.0.0.1:{health_port}"
[quickbooks]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
webhook_verifier_token = "{VERIFIER}"
api_base_url = "{sandbox.base_url}"
token_url = "{sandbox.token_url}"
[delivery]
retry_schedule = [1, 2, 4, 8]
{instances}"""
