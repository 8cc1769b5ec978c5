"""The watchdog follows progress: the whole daemon in process, a poll hung by the sandbox.

In process rather than as a subprocess so that the poll deadline can be shortened to a second
(it is 15 minutes in production); everything else is the real daemon, the real sandbox and a
real datagram socket standing in for systemd.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from harness import DaemonProcess, Receiver, SandboxProcess, instance_toml
from qbo_events import config as config_module
from qbo_events import health
from qbo_events.app import Daemon
from qbo_events.systemd import Notifier

WATCHDOG_USEC = 200_000  # a ping every 0.1 s
INTERVAL = WATCHDOG_USEC / 2 / 1e6
DEADLINE = 1.0  # the poll deadline for this test
SLOW = 5.0  # how long the sandbox holds every API answer once the fault is on
REALM = "9341453908128517"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def systemd_socket() -> Iterator[tuple[socket.socket, str]]:
    # A short directory of our own: pytest's tmp_path can exceed the 108-byte sun_path limit.
    with tempfile.TemporaryDirectory(prefix="qbo-wd-") as directory:
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(path)
        try:
            yield sock, path
        finally:
            sock.close()


def drain(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def until(condition: Callable[[], Awaitable[object]], what: str, limit: float = 30) -> None:
    """Check `condition` every 20 ms until it holds; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    for _ in itertools.count():
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.02)


def now(value: object) -> Callable[[], Awaitable[object]]:
    """A synchronous condition as `until` takes it."""

    async def check() -> object:
        return value() if callable(value) else value

    return check


def watched_daemon(
    tmp_path: Path, sandbox: SandboxProcess, receiver: Receiver, notify_address: str
) -> Daemon:
    """The whole daemon, in process, polling the sandbox's invoices every 0.6 s (below the
    test's poll deadline) and pinging `notify_address` every 0.1 s."""
    instance = instance_toml(
        "acme", REALM, receiver.url, vendor="polling",
        extra=(
            f'refresh_token = "{sandbox.refresh_token}"\n'
            "event.poller.refresh_interval = 0.01\n"
            'event.poller.urls = "invoices"\n'
        ),
    )  # fmt: skip
    files = DaemonProcess(tmp_path, instance, settings=sandbox.quickbooks_settings())
    daemon = Daemon(config_module.load(files.config_path), files.config_path)
    daemon.notifier = Notifier(notify_address, watchdog_usec=WATCHDOG_USEC)
    return daemon


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_pings_stop_while_a_poll_is_stuck_past_its_deadline_and_resume_after(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sandbox_factory: Callable[..., SandboxProcess],
    receiver: Receiver,
    systemd_socket: tuple[socket.socket, str],
) -> None:
    monkeypatch.setattr(health, "POLL_DEADLINE_FLOOR", DEADLINE)
    sock, address = systemd_socket
    sandbox = sandbox_factory()
    daemon = watched_daemon(tmp_path, sandbox, receiver, address)

    async def status() -> dict[str, object]:
        return await daemon.status()

    async def is_polling() -> bool:
        loops = (await status())["instances"]["acme"]["resources"]  # type: ignore[index]
        return bool(loops["invoices"]["state"] == "polling")

    async def polled() -> bool:
        loops = (await status())["instances"]["acme"]["resources"]  # type: ignore[index]
        return bool(loops.get("invoices", {}).get("last_success_at"))

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(daemon.run())
            await until(polled, "a first successful poll")
            await until(now(lambda: "WATCHDOG=1" in drain(sock)), "a first ping")

            await asyncio.to_thread(sandbox.faults, slow=SLOW)
            await until(is_polling, "the poll to hang")
            hung_at = time.monotonic()

            def hung_for(seconds: float) -> Callable[[], Awaitable[object]]:
                return now(lambda: time.monotonic() - hung_at > seconds)

            # Past the deadline (and a ping interval for the check to run), nothing pings;
            # watched for several ping intervals, well before the hung answer comes.
            await until(hung_for(DEADLINE + 2 * INTERVAL), "the deadline to pass")
            drain(sock)

            async def watched() -> bool:
                assert await is_polling(), "the poll ended before it was watched"
                assert "WATCHDOG=1" not in drain(sock), "pinged while a poll was stuck"
                return time.monotonic() - hung_at > DEADLINE + 7 * INTERVAL

            await until(watched, "several ping intervals")
            assert daemon.notifier.withheld[0].startswith("poll acme/invoices: no answer for")
            withheld = (await status())["watchdog"]["withheld"]  # type: ignore[index]
            assert withheld == daemon.notifier.withheld

            # The answer comes after SLOW seconds: the poll moves on and the pings resume.
            await asyncio.to_thread(sandbox.faults, slow=0)
            await until(now(lambda: not daemon.notifier.withheld), "the watchdog to resume")
            await until(now(lambda: "WATCHDOG=1" in drain(sock)), "a ping after the recovery")
            daemon.request_stop()
    finally:
        daemon.notifier.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("restore_logging")
async def test_a_poll_waiting_out_a_throttled_realm_is_not_stuck(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sandbox_factory: Callable[..., SandboxProcess],
    receiver: Receiver,
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """A 429's Retry-After (up to a day) is a wait QuickBooks asked for; a restart would only
    lose it and ask again."""
    monkeypatch.setattr(health, "POLL_DEADLINE_FLOOR", DEADLINE)
    sock, address = systemd_socket
    sandbox = sandbox_factory()
    daemon = watched_daemon(tmp_path, sandbox, receiver, address)
    pause = 6 * DEADLINE

    async def throttled() -> bool:
        realms = (await daemon.status())["quickbooks"]["realms"]  # type: ignore[index]
        return bool(realms.get(REALM, {}).get("pauses"))

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(daemon.run())
            await until(now(lambda: "WATCHDOG=1" in drain(sock)), "a first ping")
            await asyncio.to_thread(sandbox.faults, throttle=1, retry_after=pause)
            await until(throttled, "a 429 to pause the realm")
            paused_at = time.monotonic()

            async def watched() -> bool:
                assert not daemon.notifier.withheld, daemon.notifier.withheld
                return time.monotonic() - paused_at > pause - DEADLINE

            await until(watched, "most of the pause", limit=pause + 30)
            assert "WATCHDOG=1" in drain(sock)
            daemon.request_stop()
    finally:
        daemon.notifier.close()
