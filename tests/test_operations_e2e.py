"""Operating the daemon: the systemd notify protocol, reload, shutdown and secrets, end to end.

The daemon runs as a subprocess the way systemd runs it: `$NOTIFY_SOCKET` names a datagram
socket bound here, `$WATCHDOG_USEC` asks for pings, and `$WATCHDOG_PID` is the daemon's own pid.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from harness import (
    DaemonProcess,
    Receiver,
    SandboxProcess,
    free_port,
    instance_toml,
    intuit_sign,
    legacy_body,
    post_webhook,
    wait_for,
)

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47Z"
WATCHDOG_USEC = 1_000_000  # systemd's deadline; the daemon should ping every 0.5 s


# systemd's side of the notify protocol


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() on arrival
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.split("\n") if "=" in line)


class NotifySocket:
    """A bound datagram socket standing in for systemd; a thread records every datagram."""

    def __init__(self) -> None:
        # A short directory of our own: pytest's tmp_path can exceed the 108-byte sun_path limit.
        self._dir = tempfile.TemporaryDirectory(prefix="qbo-sd-")
        self.path = os.path.join(self._dir.name, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._wake_r, self._wake_w = os.pipe()
        self.messages: list[Message] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            readable, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            data = self._sock.recv(4096)
            with self._changed:
                self.messages.append(Message(time.monotonic(), data.decode()))
                self._changed.notify_all()

    def wait(
        self,
        predicate: Callable[[Message], bool],
        what: str,
        *,
        after: int = 0,
        timeout: float = 20,
    ) -> tuple[int, Message]:
        """The first message from index `after` on that satisfies `predicate`, and its index."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.messages)):
                    if predicate(self.messages[index]):
                        return index, self.messages[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    texts = [m.text for m in self.messages]
                    raise AssertionError(f"no {what} within {timeout} s; got {texts}")
                self._changed.wait(remaining)

    def texts(self) -> list[str]:
        with self._changed:
            return [m.text for m in self.messages]

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(10)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._dir.cleanup()


def is_(text: str) -> Callable[[Message], bool]:
    return lambda m: m.text == text


def starts(prefix: str) -> Callable[[Message], bool]:
    return lambda m: m.text.startswith(prefix)


class NotifiedDaemon(DaemonProcess):
    """The daemon with systemd's environment: `watchdog_pid` "self" sets `$WATCHDOG_PID` to the
    daemon's own pid as systemd does (in the child, before exec), "unset" leaves it out, and a
    number names another process."""

    def __init__(
        self,
        tmp: Path,
        instances: str,
        *,
        settings: str = "",
        notify: str,
        watchdog_usec: int | None = WATCHDOG_USEC,
        watchdog_pid: str = "self",
    ) -> None:
        super().__init__(tmp, instances, settings=settings)
        self.notify = notify
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid

    def start(self, wait: bool = True) -> NotifiedDaemon:
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = self.stderr_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": self.notify}
        for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        command = [sys.executable, "-m", "qbo_events", "run", "--config", str(self.config_path)]
        if self.watchdog_pid == "self":
            # exec keeps the pid, so $$ is the daemon's pid.
            command = ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *command]
        elif self.watchdog_pid != "unset":
            env["WATCHDOG_PID"] = self.watchdog_pid
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env
        )
        if wait:
            self.wait_ready()
        return self


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sd = NotifySocket()
    yield sd
    sd.close()


@pytest.fixture
def notified_factory(
    tmp_path: Path, notify_socket: NotifySocket
) -> Iterator[Callable[..., NotifiedDaemon]]:
    made: list[NotifiedDaemon] = []

    def make(instances: str, **options: Any) -> NotifiedDaemon:
        d = NotifiedDaemon(tmp_path, instances, notify=notify_socket.path, **options)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def status(d: DaemonProcess) -> dict[str, Any]:
    code, body = d.health("/status")
    assert code == 200
    return dict(body)


# The notify protocol


@pytest.mark.parametrize("watchdog_pid", ["self", "unset"])
def test_notify_protocol_ready_reloading_stopping_and_watchdog(
    notified_factory: Callable[..., NotifiedDaemon],
    notify_socket: NotifySocket,
    receiver: Receiver,
    watchdog_pid: str,
) -> None:
    sd = notify_socket
    d = notified_factory(instance_toml("acme", "3001", receiver.url), watchdog_pid=watchdog_pid)
    d.start(wait=False)
    assert d.proc is not None
    ready_at, _ = sd.wait(is_("READY=1"), "READY=1", timeout=30)
    # READY=1 promises the listeners are bound and the outbox is open: the daemon is usable now.
    assert d.health("/readyz") == (200, {"status": "ready"})
    assert d.post(legacy_body("3001", ("Invoice", "1", "Create", AT))) == 200
    wait_for(lambda: receiver.count() == 1, what="the delivery")
    if watchdog_pid == "self":
        environ = Path(f"/proc/{d.proc.pid}/environ").read_bytes().split(b"\0")
        assert f"WATCHDOG_PID={d.proc.pid}".encode() in environ
    assert not any(m.startswith(("RELOADING", "STOPPING")) for m in sd.texts()[:ready_at])
    sd.wait(starts("STATUS="), "a STATUS= line", after=ready_at)

    # WATCHDOG=1 every half $WATCHDOG_USEC, never late enough for systemd to kill us.
    index, ping = sd.wait(is_("WATCHDOG=1"), "a first WATCHDOG=1")
    pings = [ping.at]
    while len(pings) < 6:
        index, ping = sd.wait(is_("WATCHDOG=1"), "the next WATCHDOG=1", after=index + 1)
        pings.append(ping.at)
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    half = WATCHDOG_USEC / 2 / 1e6
    assert half * 0.7 <= gaps[len(gaps) // 2] <= half * 1.4, gaps
    assert gaps[-1] < WATCHDOG_USEC / 1e6, gaps

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC in one datagram, then READY=1.
    mark = len(sd.texts())
    before = monotonic_usec()
    d.signal(signal.SIGHUP)
    reloading_at, reloading = sd.wait(starts("RELOADING=1"), "RELOADING=1", after=mark)
    after = monotonic_usec()
    fields = reloading.fields
    assert set(fields) == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    sd.wait(is_("READY=1"), "READY=1 after the reload", after=reloading_at)
    wait_for(
        lambda: status(d)["last_reload"]["ok"] and status(d)["last_reload"]["at"], what="reload"
    )

    # SIGTERM: STOPPING=1, then exit 0.
    mark = len(sd.texts())
    d.signal(signal.SIGTERM)
    stopping_at, _ = sd.wait(is_("STOPPING=1"), "STOPPING=1", after=mark)
    assert d.proc.wait(20) == 0
    texts = sd.texts()
    assert not any(t == "READY=1" or t.startswith("RELOADING") for t in texts[stopping_at:])
    assert texts.count("STOPPING=1") == 1


def test_a_rejected_reload_still_answers_ready(
    notified_factory: Callable[..., NotifiedDaemon], notify_socket: NotifySocket, receiver: Receiver
) -> None:
    """systemd waits in `reloading` until READY=1: a rejected config must not leave it there."""
    sd = notify_socket
    d = notified_factory(instance_toml("acme", "3101", receiver.url)).start()
    d.config_path.write_text("this is [not toml\n")
    mark = len(sd.texts())
    d.signal(signal.SIGHUP)
    reloading_at, _ = sd.wait(starts("RELOADING=1"), "RELOADING=1", after=mark)
    sd.wait(is_("READY=1"), "READY=1 after the rejected reload", after=reloading_at)
    assert status(d)["last_reload"]["ok"] is False
    assert d.stop() == 0


def test_watchdog_pid_of_another_process_means_no_pings(
    notified_factory: Callable[..., NotifiedDaemon], notify_socket: NotifySocket, receiver: Receiver
) -> None:
    sd = notify_socket
    d = notified_factory(
        instance_toml("acme", "3201", receiver.url), watchdog_usec=200_000, watchdog_pid="1"
    ).start()
    ready_at, _ = sd.wait(is_("READY=1"), "READY=1")
    # Ten intervals' worth: a ping, had one been due, would have come several times over.
    with pytest.raises(AssertionError):
        sd.wait(is_("WATCHDOG=1"), "WATCHDOG=1", timeout=1.0)
    assert d.stop() == 0
    assert "WATCHDOG=1" not in sd.texts()
    assert "STOPPING=1" in sd.texts()[ready_at:]


# Reload


def test_sighup_adds_an_instance_without_a_restart(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "4001", receiver.url)).start()
    assert d.proc is not None
    pid = d.proc.pid
    # Before the reload, realm 4002 is nobody's: counted, not delivered.
    assert d.post(legacy_body("4002", ("Invoice", "before", "Create", AT))) == 200
    assert status(d)["webhooks"]["unknown_realm_entities"] == 1

    d.write_config(
        instance_toml("acme", "4001", receiver.url) + instance_toml("globex", "4002", receiver.url)
    )
    d.signal(signal.SIGHUP)
    wait_for(lambda: "globex" in status(d)["instances"], what="the new instance")
    reload = status(d)["last_reload"]
    assert reload["ok"] is True and reload["error"] is None and reload["at"]

    assert d.post(legacy_body("4002", ("Invoice", "after", "Create", AT))) == 200
    assert d.post(legacy_body("4001", ("Invoice", "old", "Create", AT))) == 200
    wait_for(lambda: receiver.count() == 2, what="both deliveries")
    got = {
        (d_["body"]["message"]["instanceId"], d_["body"]["message"]["events"][0]["objectId"])
        for d_ in receiver.deliveries
    }
    assert got == {("globex", "after"), ("acme", "old")}
    assert receiver.bad_signatures == 0
    assert d.proc.pid == pid and d.proc.poll() is None
    assert '"reloaded"' in d.stderr()
    assert d.stop() == 0


def test_sighup_moves_the_webhook_path_body_limit_and_address(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "4101", receiver.url)).start()
    body = legacy_body("4101", *[("Invoice", str(i), "Create", AT) for i in range(40)])
    assert 2048 < len(body) < 8192
    old_url = d.webhook_url
    d.write_config(
        instance_toml("acme", "4101", receiver.url),
        settings='[http]\nwebhook_path = "/qbo"\nmax_body_bytes = 2048\n'
        f'webhook_listen = "0.0.0.0:{d.webhook_port}"',
    )
    d.signal(signal.SIGHUP)
    wait_for(lambda: status(d)["last_reload"]["at"], what="the reload")
    assert status(d)["last_reload"]["ok"] is True, status(d)["last_reload"]
    # Same port, all addresses now; the old path is gone and the new limit holds.
    assert post_webhook(old_url, body) == 404
    new_url = old_url.replace("/webhooks/quickbooks", "/qbo")
    assert post_webhook(new_url, body) == 413
    small = legacy_body("4101", ("Invoice", "x", "Create", AT))
    assert post_webhook(new_url, small) == 200
    wait_for(lambda: receiver.count() == 1, what="the delivery through the new path")
    assert d.stop() == 0


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        ("schema", "instances[0].event.poller.refresh_interval: must be > 0"),
        ("toml", "invalid TOML: "),
        ("missing", "cannot read: No such file or directory"),
    ],
)
def test_an_invalid_config_on_sighup_keeps_the_old_one_running(
    daemon_factory: Factory, receiver: Receiver, breakage: str, error: str
) -> None:
    d = daemon_factory(instance_toml("acme", "5001", receiver.url)).start()
    assert d.proc is not None
    pid = d.proc.pid
    good = d.config_path.read_text()
    if breakage == "schema":
        d.write_config(
            instance_toml("acme", "5001", receiver.url, extra="event.poller.refresh_interval = 0")
            + instance_toml("globex", "5002", receiver.url)
        )
    elif breakage == "toml":
        d.config_path.write_text(good + "\n[[instances]\n")
    else:
        d.config_path.unlink()
    d.signal(signal.SIGHUP)
    wait_for(lambda: status(d)["last_reload"]["ok"] is False, what="the rejected reload")
    reload = status(d)["last_reload"]
    assert any(error in problem for problem in reload["error"]), reload
    assert list(status(d)["instances"]) == ["acme"]
    assert d.health("/readyz")[0] == 200

    # The old configuration still runs: acme delivers; globex's realm is still nobody's.
    assert d.post(legacy_body("5001", ("Invoice", "1", "Create", AT))) == 200
    assert d.post(legacy_body("5002", ("Invoice", "2", "Create", AT))) == 200
    wait_for(lambda: receiver.count() == 1, what="acme's delivery")
    assert status(d)["webhooks"]["unknown_realm_entities"] == 1
    assert receiver.events()[0]["objectId"] == "1"
    assert "reload rejected" in d.stderr()

    # Fixing the file and reloading again recovers.
    d.config_path.write_text(good)
    d.signal(signal.SIGHUP)
    wait_for(lambda: status(d)["last_reload"]["ok"] is True, what="the good reload")
    assert status(d)["last_reload"]["error"] is None
    assert d.proc.pid == pid and d.proc.poll() is None
    assert d.stop() == 0


# Shutdown


class HoldingReceiver(Receiver):
    """A receiver that holds every request until released: deliveries stuck in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    async def _start(self) -> None:
        self._release = asyncio.Event()
        await super()._start()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        with self._lock:
            self.held += 1
        await self._release.wait()
        return web.Response(status=503)

    def holding(self) -> int:
        with self._lock:
            return self.held

    def stop(self) -> None:
        if hasattr(self, "_loop"):
            self._loop.call_soon_threadsafe(self._release.set)
        super().stop()


@pytest.fixture
def holding_receiver() -> Iterator[HoldingReceiver]:
    r = HoldingReceiver().start()
    assert isinstance(r, HoldingReceiver)
    yield r
    r.stop()


def test_sigterm_with_stuck_deliveries_exits_0_in_time_and_loses_nothing(
    daemon_factory: Factory, holding_receiver: HoldingReceiver, receiver: Receiver
) -> None:
    shutdown_timeout, margin, events, in_flight = 1.0, 4.0, 24, 16
    d = daemon_factory(
        instance_toml("acme", "6001", holding_receiver.url),
        settings=(
            f"[delivery]\nshutdown_timeout = {shutdown_timeout}\ntimeout = 60\n"
            f"max_in_flight_per_endpoint = {in_flight}"
        ),
    ).start()
    assert d.proc is not None
    for i in range(events):
        assert d.post(legacy_body("6001", ("Invoice", str(i), "Create", AT))) == 200
    wait_for(lambda: holding_receiver.holding() == in_flight, what=f"{in_flight} stuck deliveries")

    started = time.monotonic()
    d.signal(signal.SIGTERM)
    code = d.proc.wait(shutdown_timeout + margin)
    elapsed = time.monotonic() - started
    assert code == 0
    # The in-flight deliveries got their shutdown_timeout, and no more than that.
    assert shutdown_timeout * 0.9 <= elapsed <= shutdown_timeout + margin, elapsed
    log = d.stderr()
    assert "deliveries cut off at shutdown" in log
    stopped = [orjson.loads(line) for line in log.splitlines() if '"stopped"' in line]
    assert stopped and stopped[-1]["undelivered"] == events

    # Restart against a receiver that answers: every event arrives.
    d.write_config(
        instance_toml("acme", "6001", receiver.url),
        settings="[delivery]\nshutdown_timeout = 1",
    )
    d.start()
    wait_for(
        lambda: {e["objectId"] for e in receiver.events()} == {str(i) for i in range(events)},
        timeout=30,
        what=f"all {events} events after the restart",
    )
    assert receiver.bad_signatures == 0
    assert holding_receiver.holding() == in_flight  # nothing went back to the old URL
    assert d.stop() == 0


# Secrets


CLIENT_SECRET = "cs-Q7vT2-client-secret-e41b9d"
REFRESH_TOKEN = "rt-K3pW8-refresh-token-5c07aa"
VERIFIER_TOKEN = "vt-M9xR4-verifier-token-b2f613"
SIGNATURE_KEY = "sk-H6nJ1-signature-key-0d8e57"
NEW_SIGNATURE_KEY = "sk-P2cL5-rotated-signature-key-9a1f"
ACCESS_TOKEN_SHAPE = re.compile(r"eyJlbmMiOiJBMTI4Q0JDLUhTMjU2[A-Za-z0-9_-]{8,}")
REALM = "9341453908128517"


class SecretSandbox(SandboxProcess):
    """The sandbox with this file's distinctive credentials instead of the harness's."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.realms = (REALM,)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token_url = f"{self.base_url}/oauth2/v1/tokens/bearer"
        self.refresh_token = REFRESH_TOKEN
        args = [
            sys.executable, "-m", "qbo_events", "sandbox", "--port", str(self.port),
            "--realm-id", REALM, "--client-id", "secret-test-client",
            "--client-secret", CLIENT_SECRET, "--refresh-token", REFRESH_TOKEN,
            "--verifier-token", VERIFIER_TOKEN, "--seed", "1", "--random-seed", "3",
        ]  # fmt: skip
        self._out = (tmp / f"sandbox-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        wait_for(self._up, 20, "the sandbox to listen")

    def settings(self, log_level: str = "debug") -> str:
        return (
            f'[log]\nlevel = "{log_level}"\n'
            "[quickbooks]\n"
            'client_id = "secret-test-client"\n'
            f'client_secret = "{CLIENT_SECRET}"\n'
            f'webhook_verifier_token = "{VERIFIER_TOKEN}"\n'
            f'api_base_url = "{self.base_url}"\n'
            f'token_url = "{self.token_url}"\n'
        )


@pytest.fixture
def secret_sandbox(tmp_path: Path) -> Iterator[SecretSandbox]:
    s = SecretSandbox(tmp_path)
    yield s
    s.close()


def test_no_secret_reaches_stderr_status_metrics_or_systemd(
    notified_factory: Callable[..., NotifiedDaemon],
    notify_socket: NotifySocket,
    secret_sandbox: SecretSandbox,
) -> None:
    receiver = Receiver(key=SIGNATURE_KEY).start()
    rotated = Receiver(key=NEW_SIGNATURE_KEY)
    failures = {"left": 1}

    def plan(_id: str, _n: int) -> tuple[int, dict[str, str]]:
        if failures["left"]:
            failures["left"] -= 1
            return 500, {}
        return 200, {}

    receiver.plan = plan
    sandbox = secret_sandbox

    def instance(url: str, key: str) -> str:
        return instance_toml(
            "acme", REALM, url, vendor="hybrid", key=key,
            extra=(
                f'refresh_token = "{REFRESH_TOKEN}"\n'
                "event.poller.refresh_interval = 0.02\n"
                'event.poller.urls = "invoices"\n'
                "event.poller.overlap = 5\n"
            ),
        )  # fmt: skip

    d = notified_factory(instance(receiver.url, SIGNATURE_KEY), settings=sandbox.settings())
    seen: list[str] = []  # every text the daemon showed to the outside

    def look(path: str) -> Any:
        _, body = d.health(path)
        seen.append(body if isinstance(body, str) else orjson.dumps(body).decode())
        return body

    try:
        d.start()

        def polled() -> bool:
            loops = look("/status")["instances"]["acme"]["resources"]
            return bool(loops.get("invoices", {}).get("last_success_at"))

        wait_for(polled, what="a first successful poll (a token refresh)")

        # A polled change, delivered signed, after one failed attempt.
        created = sandbox.change("Invoice", "Create", 1)
        wait_for(lambda: receiver.count() >= 1, what="the polled delivery")

        # Forged webhooks, a good one, a signed one that cannot be understood.
        body = legacy_body(REALM, ("Invoice", "w1", "Update", AT))
        assert d.post(body, signature=intuit_sign(body, "not-the-verifier")) == 401
        assert d.post(body, signature=VERIFIER_TOKEN) == 401
        assert d.post(body, signature="") == 401
        assert d.post(body, signature=intuit_sign(body, VERIFIER_TOKEN)) == 200
        garbage = b'{"eventNotifications": {"secret": "' + CLIENT_SECRET.encode() + b'"}}'
        assert d.post(garbage, signature=intuit_sign(garbage, VERIFIER_TOKEN)) == 200
        wait_for(lambda: "w1" in {e["objectId"] for e in receiver.events()}, what="the webhook")
        assert receiver.bad_signatures == 0

        # Expired access tokens: a 401 from QuickBooks, then a refresh with rotation.
        refreshes = sandbox.control("GET", "/_sandbox/stats")["token_refreshes"]
        sandbox.faults(expire_tokens=True)
        wait_for(
            lambda: sandbox.control("GET", "/_sandbox/stats")["token_refreshes"] > refreshes,
            what="a refresh after the expiry",
        )
        wait_for(polled, what="polling after the refresh")
        issued = sandbox.control("GET", "/_sandbox/stats")["refresh_tokens"]

        look("/status")
        look("/metrics")
        look("/readyz")
        look("/healthz")
        cli = subprocess.run(
            [sys.executable, "-m", "qbo_events", "status", "--config", str(d.config_path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        seen += [cli.stdout, cli.stderr]
        listing = subprocess.run(
            [sys.executable, "-m", "qbo_events", "deliveries", "list", "--config",
             str(d.config_path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        seen += [listing.stdout, listing.stderr]

        # A good reload that rotates the signature key, and a rejected one.
        rotated.start()
        d.write_config(instance(rotated.url, NEW_SIGNATURE_KEY), settings=sandbox.settings())
        d.signal(signal.SIGHUP)
        wait_for(lambda: look("/status")["last_reload"]["at"], what="the reload")
        assert look("/status")["last_reload"]["ok"] is True
        sandbox.change("Invoice", "Update", 1, id=created[0]["object_id"])
        wait_for(lambda: rotated.count() >= 1, what="a delivery signed with the new key")
        assert rotated.bad_signatures == 0

        good = d.config_path.read_text()
        d.config_path.write_text(
            good.replace(
                f'client_secret = "{CLIENT_SECRET}"',
                f'client_secret = "{CLIENT_SECRET}"\nclient_secret_file = "/nonexistent"',
            )
        )
        d.signal(signal.SIGHUP)
        wait_for(lambda: look("/status")["last_reload"]["ok"] is False, what="the rejection")
        d.config_path.write_text(good)

        # A revoked refresh token: invalid_grant, needs re-authorization.
        sandbox.faults(revoke=True)
        sandbox.faults(expire_tokens=True)
        wait_for(
            lambda: look("/status")["instances"]["acme"].get("state") == "needs re-authorization",
            what="needs re-authorization",
        )
        look("/metrics")
        look("/status")
        assert d.stop() == 0
    finally:
        receiver.stop()
        rotated.stop()

    # Tokens live only under state_dir, which nobody else may read.
    assert d.state_dir.stat().st_mode & 0o777 == 0o700
    for path in d.state_dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path

    log = d.stderr()
    # The run went through the paths that handle secrets, so silence would prove nothing.
    for expected in (
        "webhook with a missing or wrong intuit-signature",
        "quarantined",
        "reloaded",
        "reload rejected",
        "needs_reauthorization",
        '"stopped"',
    ):
        assert expected in log, expected
    secrets = {CLIENT_SECRET, REFRESH_TOKEN, VERIFIER_TOKEN, SIGNATURE_KEY, NEW_SIGNATURE_KEY}
    secrets |= {token for tokens in issued.values() for token in tokens}
    assert len(secrets) > 5, "the sandbox should have issued rotated refresh tokens"
    outputs = {"stderr": log, "systemd": "\n".join(notify_socket.texts())}
    outputs |= {f"seen[{i}]": text for i, text in enumerate(seen)}
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) in {where}"
        assert not ACCESS_TOKEN_SHAPE.search(text), f"an access token in {where}"


def test_a_restart_only_key_put_back_to_its_running_value_is_not_warned_about(
    daemon_factory: Factory, receiver: Receiver, tmp_path: Path
) -> None:
    d = daemon_factory(instance_toml("acme", "5101", receiver.url)).start()
    running = d.state_dir

    def reload_with(state_dir: Path) -> None:
        d.state_dir = state_dir
        d.write_config(instance_toml("acme", "5101", receiver.url))
        before = d.stderr().count('"reloaded"')
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.stderr().count('"reloaded"') > before, what="the reload")

    reload_with(tmp_path / "elsewhere")
    assert d.stderr().count("takes effect at the next restart") == 1
    reload_with(running)  # back to what the daemon runs with: nothing is pending
    reload_with(running)
    assert d.stderr().count("takes effect at the next restart") == 1
    assert d.stop() == 0
