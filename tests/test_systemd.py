"""The notify protocol over real datagram sockets, the watchdog's behaviour, and the unit file."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from qbo_events import logs
from qbo_events.systemd import Notifier

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "qbo-events.service"
WATCHDOG_USEC = 200_000  # pings every 0.1 s
INTERVAL = WATCHDOG_USEC / 2 / 1_000_000
DEADLINE = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and the $NOTIFY_SOCKET that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if request.param == "path":
        # A short directory of our own: pytest's tmp_path can exceed the 108-byte sun_path limit.
        with tempfile.TemporaryDirectory(prefix="qbo-sd-") as directory:
            path = os.path.join(directory, "notify")
            sock.bind(path)
            try:
                yield sock, path
            finally:
                sock.close()
    else:
        name = f"qbo-events-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        try:
            yield sock, "@" + name
        finally:
            sock.close()


def notifier_for(address: str, **env: str) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": address, **env})


def receive(sock: socket.socket) -> str:
    """The next datagram, waiting up to DEADLINE seconds (outside an event loop)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return sock.recv(4096).decode()
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("no datagram arrived") from None
            # Readiness, not a fixed pause: select returns as soon as a datagram is there.
            select.select([sock], [], [], deadline - time.monotonic())


def drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def receive_async(sock: socket.socket) -> tuple[float, str]:
    """The next datagram and when it arrived, waiting up to DEADLINE seconds."""
    async with asyncio.timeout(DEADLINE):
        data = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return time.monotonic(), data.decode()


# The protocol


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("up") is False
    assert notifier.watchdog_interval() is None
    assert notifier.sent == 0


def test_messages_arrive_on_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address)
    try:
        assert notifier.ready()
        assert receive(sock) == "READY=1"

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading, monotonic = receive(sock).split("\n")
        assert reloading == "RELOADING=1"
        key, _, value = monotonic.partition("=")
        assert key == "MONOTONIC_USEC"
        assert value.isdigit()
        assert before <= int(value) <= after

        assert notifier.stopping()
        assert receive(sock) == "STOPPING=1"
        assert notifier.status("2 instances, 44 loops, 0 pending")
        assert receive(sock) == "STATUS=2 instances, 44 loops, 0 pending"
        assert notifier.watchdog()
        assert receive(sock) == "WATCHDOG=1"
        assert notifier.notify("READY=1", "STATUS=back")
        assert receive(sock) == "READY=1\nSTATUS=back"
        assert notifier.sent == 6
    finally:
        notifier.close()


def test_status_is_one_line_and_redacted(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address)
    logs.set_secrets(["s3cr3t-client-value"])
    try:
        notifier.status("reload failed:\n  client_secret s3cr3t-client-value\trejected")
        assert receive(sock) == "STATUS=reload failed: client_secret [REDACTED] rejected"
    finally:
        logs.set_secrets([])
        notifier.close()


def test_send_errors_never_raise() -> None:
    with tempfile.TemporaryDirectory(prefix="qbo-sd-") as directory:
        notifier = notifier_for(os.path.join(directory, "nobody-listens"))
        try:
            assert notifier.enabled
            assert notifier.ready() is False
            assert notifier.watchdog() is False
            assert notifier.sent == 0
        finally:
            notifier.close()


def test_a_full_receiver_does_not_block_the_sender(
    notify_socket: tuple[socket.socket, str],
) -> None:
    # Nobody reads: the kernel queue fills and sends must fail at once instead of waiting.
    _, address = notify_socket
    notifier = notifier_for(address)
    try:
        started = time.monotonic()
        results = [notifier.watchdog() for _ in range(5000)]
        assert time.monotonic() - started < 5
        assert results[0] is True
        assert results[-1] is False
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    notifier = notifier_for("@qbo-events-unused", **env)
    assert notifier.watchdog_interval() == expected


def test_an_unsupported_socket_address_disables_notifications() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "relative/path", "WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None


# The watchdog


@pytest.mark.anyio
async def test_watchdog_pings_every_half_interval(notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(notifier.run_watchdog(stop, list))
            arrivals = []
            for _ in range(6):
                arrived, message = await receive_async(sock)
                assert message == "WATCHDOG=1"
                arrivals.append(arrived)
            stop.set()
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert 0.7 * INTERVAL <= statistics.median(gaps) <= 2 * INTERVAL
    finally:
        notifier.close()


@pytest.mark.anyio
async def test_no_watchdog_while_the_loop_is_blocked(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    stop = asyncio.Event()
    during_block: list[str] = []
    unblocked = asyncio.Event()

    def block_the_loop() -> None:
        # Drain and check inside the same callback, so nothing else can run on the loop between.
        drain(sock)
        time.sleep(3 * INTERVAL)
        during_block.extend(drain(sock))
        unblocked.set()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(notifier.run_watchdog(stop, list))
            assert (await receive_async(sock))[1] == "WATCHDOG=1"
            asyncio.get_running_loop().call_soon(block_the_loop)
            await unblocked.wait()
            assert during_block == []
            # The watchdog survived the stall and pings again.
            assert (await receive_async(sock))[1] == "WATCHDOG=1"
            stop.set()
    finally:
        notifier.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_no_watchdog_while_wedged_and_why_is_logged_once(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    stop = asyncio.Event()
    checked_four_times = asyncio.Event()
    checks = 0
    reasons = ["poll acme/invoices: no answer for 901 s (deadline 900 s)"]

    def wedged() -> list[str]:
        nonlocal checks
        checks += 1
        if checks == 4:
            checked_four_times.set()
        return reasons

    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(notifier.run_watchdog(stop, wedged))
            async with asyncio.timeout(DEADLINE):
                await checked_four_times.wait()
            assert drain(sock) == []
            assert notifier.withheld == reasons
            assert out.getvalue().count("watchdog withheld") == 1
            assert "poll acme/invoices" in out.getvalue()
            reasons = []
            assert (await receive_async(sock))[1] == "WATCHDOG=1"
            assert notifier.withheld == []
            assert "watchdog resumed" in out.getvalue()
            stop.set()
    finally:
        notifier.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_a_failing_health_check_counts_as_unhealthy(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    stop = asyncio.Event()
    checked_three_times = asyncio.Event()
    calls = 0

    def health() -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 3:
            checked_three_times.set()
        raise RuntimeError("sender pool gone")

    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(notifier.run_watchdog(stop, health))
            async with asyncio.timeout(DEADLINE):
                await checked_three_times.wait()
            stop.set()
        assert drain(sock) == []
        assert "health check failed" in out.getvalue()
        assert "sender pool gone" in out.getvalue()
    finally:
        notifier.close()


@pytest.mark.anyio
async def test_watchdog_returns_as_soon_as_stop_is_set(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, address = notify_socket
    notifier = notifier_for(address, WATCHDOG_USEC="600000000")  # a ping every 5 minutes
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(2), asyncio.TaskGroup() as group:
            group.create_task(notifier.run_watchdog(stop, list))
            assert (await receive_async(sock))[1] == "WATCHDOG=1"
            stop.set()
    finally:
        notifier.close()


@pytest.mark.anyio
async def test_watchdog_without_watchdog_usec_returns_at_once(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, address = notify_socket
    notifier = notifier_for(address)
    async with asyncio.timeout(2):
        await notifier.run_watchdog(asyncio.Event(), list)
    assert notifier.sent == 0


# The unit file


def read_unit(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value assigned, in order (keys such as LoadCredential= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        message = "systemd-analyze is not installed (.ci/install-system-deps installs it)"
        # CI must run this check; a developer's machine without systemd may skip it.
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def unit_with_local_executable(directory: Path) -> Path:
    """The unit as shipped, with only ExecStart's program pointed at this environment's command.

    `systemd-analyze verify` checks that ExecStart's program exists and is executable, and the
    shipped /usr/local/bin/qbo-events exists only once installed. Every other line (the sandbox,
    the credentials, ExecReload, the ${CONFIGURATION_DIRECTORY} argument) is verified as shipped.
    (`--root=` is no help: it wants a whole system tree, targets included, under that root.)
    """
    script = Path(sys.executable).parent / "qbo-events"
    program = str(script) if script.exists() else f"{sys.executable} -m qbo_events"
    original = UNIT.read_text()
    changed = re.sub(
        r"^ExecStart=/usr/local/bin/qbo-events ",
        lambda _: f"ExecStart={program} ",
        original,
        flags=re.MULTILINE,
    )
    differing = [
        (a, b) for a, b in zip(original.splitlines(), changed.splitlines(), strict=True) if a != b
    ]
    assert len(differing) == 1, differing
    unit = directory / UNIT.name
    unit.write_text(changed)
    return unit


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    unit = unit_with_local_executable(tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # Warnings (an unknown key, a misspelt value) do not change the exit code: reject them too.
    assert result.stdout == result.stderr == "", result.stdout + result.stderr


def test_unit_sandbox_exposure_stays_low(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    unit = unit_with_local_executable(tmp_path)
    result = subprocess.run(
        # The threshold counts tenths: 1.1 with systemd 252; what remains is network access.
        [analyze, "security", "--offline=true", "--threshold=15", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_has_the_required_directives() -> None:
    service = read_unit()["Service"]

    def one(key: str) -> str:
        values = service.get(key, [])
        assert len(values) == 1, f"{key}= {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart").startswith("/usr/local/bin/qbo-events run --config ")
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("WatchdogSec") == "30s"
    assert one("Restart") == "on-failure"
    assert one("StateDirectory") == "qbo-events"
    assert one("StateDirectoryMode") == "0700"
    assert one("ConfigurationDirectory") == "qbo-events"
    assert one("UMask") == "0077"
    credentials = {value.partition(":")[0] for value in service["LoadCredential"]}
    assert {"client_secret", "webhook_verifier_token", "signature_key"} <= credentials
    for key in (
        "DynamicUser",
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictRealtime",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == ""
    assert one("RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
    assert service["SystemCallFilter"][0] == "@system-service"


def test_the_runtime_works_without_writable_executable_memory() -> None:
    """What MemoryDenyWriteExecute=yes allows, tried with the kernel's equivalent (PR_SET_MDWE)."""
    script = textwrap.dedent(
        """
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(3)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except OSError:
            pass
        else:
            sys.exit("writable executable memory was allowed: the check proves nothing")

        import sqlite3
        import aiohttp, msgspec, orjson, structlog, uvloop
        from aiohttp import web
        import qbo_events.logs, qbo_events.systemd

        async def main():
            app = web.Application()
            app.router.add_get("/", lambda request: web.Response(body=orjson.dumps({"ok": 1})))
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert msgspec.json.decode(await response.read()) == {"ok": 1}
            await runner.cleanup()
            sqlite3.connect(":memory:").execute("select 1").fetchone()

        uvloop.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr
