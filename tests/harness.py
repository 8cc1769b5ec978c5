"""The test harness: free ports, waiting on conditions, the callback receiver, the daemon."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook

VERIFIER = "test-verifier-token-0123456789"
SIGNATURE_KEY = "test-signature-key-abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def intuit_sign(body: bytes, token: str = VERIFIER) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def post_webhook(url: str, body: bytes, *, signature: str | None = None, **headers: str) -> int:
    """POST a webhook body, signed with the test verifier token unless `signature` is given."""
    sig = intuit_sign(body) if signature is None else signature
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"intuit-signature": sig, "Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


class Receiver:
    """A callback endpoint on 127.0.0.1 in its own thread, verifying every delivery's signatures.

    `plan` decides each answer: a function of (event id, attempt number) -> (status, headers).
    """

    def __init__(self, key: str | None = SIGNATURE_KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.key = key
        self.deliveries: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.bad_signatures = 0
        self.plan: Callable[[str, int], tuple[int, dict[str, str]]] = lambda _id, _n: (200, {})
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    def start(self) -> Receiver:
        """Serve on the port chosen at construction (a receiver not started refuses)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=10 * 2**20)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("webhook-id", "")
        with self._lock:
            attempt = self.attempts.get(event_id, 0) + 1
            self.attempts[event_id] = attempt
        status, headers = self.plan(event_id, attempt)
        if status // 100 == 2:
            ok = self._verify(body, request.headers)
            with self._lock:
                if not ok:
                    self.bad_signatures += 1
                self.deliveries.append(
                    {
                        "id": event_id,
                        "headers": dict(request.headers),
                        "body": orjson.loads(body),
                        "raw": body,
                        "at": time.time(),
                    }
                )
        return web.Response(status=status, headers=headers)

    def _verify(self, body: bytes, headers: Any) -> bool:
        if self.key is None:
            return True
        try:
            secret = "whsec_" + base64.b64encode(self.key.encode()).decode()
            Webhook(secret).verify(body, dict(headers))
        except Exception:
            return False
        expected = (
            "sha256="
            + base64.b64encode(hmac.new(self.key.encode(), body, hashlib.sha256).digest()).decode()
        )
        return hmac.compare_digest(expected, headers.get("Elements-Webhook-Signature", ""))

    def events(self) -> list[dict[str, Any]]:
        """The `events[0]` of each delivered Open Connectors message, in arrival order."""
        with self._lock:
            return [d["body"]["message"]["events"][0] for d in self.deliveries]

    def ids(self) -> list[str]:
        with self._lock:
            return [d["id"] for d in self.deliveries]

    def count(self) -> int:
        with self._lock:
            return len(self.deliveries)

    def stop(self) -> None:
        if not hasattr(self, "_loop"):
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def instance_toml(
    name: str,
    realm: str,
    url: str,
    *,
    vendor: str = "webhook",
    key: str | None = SIGNATURE_KEY,
    extra: str = "",
) -> str:
    lines = [
        "[[instances]]",
        f'name = "{name}"',
        f'realm_id = "{realm}"',
        'tags = ["Docs"]',
        f'event.vendor.type = "{vendor}"',
        f'event.notification.callback.url = "{url}"',
    ]
    if key:
        lines.append(f'event.notification.signature.key = "{key}"')
    return "\n".join(lines) + "\n" + extra + "\n"


class DaemonProcess:
    """`qbo-events run` as a subprocess, with its config in a temporary directory."""

    def __init__(self, tmp: Path, instances: str, *, settings: str = "") -> None:
        self.tmp = tmp
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.state_dir = tmp / "state"
        self.config_path = tmp / "config.toml"
        self.stderr_path = tmp / "daemon.stderr"
        self.write_config(instances, settings=settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    def write_config(self, instances: str, *, settings: str = "") -> None:
        """`settings` holds TOML sections whose keys override the test defaults."""
        sections: dict[str, dict[str, str]] = {
            "log": {"level": '"info"', "format": '"json"'},
            "http": {
                "webhook_listen": f'"127.0.0.1:{self.webhook_port}"',
                "health_listen": f'"127.0.0.1:{self.health_port}"',
            },
            "quickbooks": {"webhook_verifier_token": f'"{VERIFIER}"'},
            "delivery": {"timeout": "5", "retry_schedule": "[0.2, 0.4, 0.8]"},
            "outbox": {},
        }
        current = ""
        for line in settings.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                current = stripped.strip("[]")
            elif stripped:
                key, _, value = stripped.partition("=")
                sections[current][key.strip()] = value.strip()
        text = f'state_dir = "{self.state_dir}"\n'
        for name, values in sections.items():
            text += f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        self.config_path.write_text(text + instances)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/webhooks/quickbooks"

    def health(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            with exc:
                body, status = exc.read(), exc.code
        if path == "/metrics":
            return status, body.decode()
        return status, orjson.loads(body)

    def start(self, wait: bool = True) -> DaemonProcess:
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = self.stderr_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qbo_events", "run", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            try:
                return self.health("/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, "the daemon to be ready")

    def post(self, body: bytes, *, signature: str | None = None, **headers: str) -> int:
        return post_webhook(self.webhook_url, body, signature=signature, **headers)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return int(self.proc.returncode)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self._stderr is not None:
            self._stderr.close()


def legacy_body(realm: str, *entities: tuple[str, str, str, str]) -> bytes:
    """entities: (name, id, operation, lastUpdated)."""
    return orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm,
                    "dataChangeEvent": {
                        "entities": [
                            {"name": n, "id": i, "operation": op, "lastUpdated": at}
                            for n, i, op, at in entities
                        ]
                    },
                }
            ]
        }
    )


SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret-0123456789"


class SandboxProcess:
    """`qbo-events sandbox` as a subprocess, driven through its /_sandbox/ control API."""

    def __init__(
        self,
        tmp: Path,
        *,
        realms: tuple[str, ...] = ("9341453908128517",),
        webhook_url: str = "",
        webhook_format: str = "legacy",
        seed: int = 3,
        options: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.realms = realms
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token_url = f"{self.base_url}/oauth2/v1/tokens/bearer"
        self.refresh_token = "sandbox-refresh-token-0123456789"
        args = [
            sys.executable, "-m", "qbo_events", "sandbox", "--port", str(self.port),
            "--client-id", SANDBOX_CLIENT_ID, "--client-secret", SANDBOX_CLIENT_SECRET,
            "--refresh-token", self.refresh_token, "--verifier-token", VERIFIER,
            "--seed", str(seed), "--webhook-format", webhook_format, "--random-seed", "7",
        ]  # fmt: skip
        for realm in realms:
            args += ["--realm-id", realm]
        if webhook_url:
            args += ["--webhook-url", webhook_url]
        args += options
        self._out = (tmp / f"sandbox-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        wait_for(self._up, 20, "the sandbox to listen")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"sandbox exited {self.proc.returncode}")
        try:
            self.control("GET", "/_sandbox/stats")
            return True
        except OSError:
            return False

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def change(self, entity: str, operation: str, count: int = 1, **extra: Any) -> list[Any]:
        body = {"entity": entity, "operation": operation, "count": count, **extra}
        return list(self.control("POST", "/_sandbox/changes", body)["changes"])

    def faults(self, **switches: Any) -> Any:
        return self.control("POST", "/_sandbox/faults", switches)

    def stats(self) -> Any:
        return self.control("GET", "/_sandbox/stats")

    def change_log(self, realm: str | None = None) -> list[Any]:
        """Every change the sandbox made, oldest first (of one realm when given)."""
        query = f"?realm_id={realm}" if realm else ""
        return list(self.control("GET", f"/_sandbox/changes{query}")["changes"])

    def realm_refresh_token(self, realm: str) -> str:
        return self.refresh_token if realm == self.realms[0] else f"{self.refresh_token}-{realm}"

    def quickbooks_settings(self) -> str:
        return (
            "[quickbooks]\n"
            f'client_id = "{SANDBOX_CLIENT_ID}"\n'
            f'client_secret = "{SANDBOX_CLIENT_SECRET}"\n'
            f'api_base_url = "{self.base_url}"\n'
            f'token_url = "{self.token_url}"\n'
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                # A request held by the `slow` fault would keep it up; no test needs that.
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
