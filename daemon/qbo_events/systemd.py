"""The systemd notify protocol: READY, RELOADING, STOPPING, STATUS, WATCHDOG; a no-op without it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from qbo_events.logs import get_logger, redact

__all__ = ["Notifier"]

_log = get_logger(component="systemd")


class Notifier:
    """Sends sd_notify datagrams to `$NOTIFY_SOCKET`; every method is a no-op when it is unset.

    A failed send is logged once (at debug) and otherwise ignored: telling systemd about our
    state must never be the reason the daemon stops.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        self._address = _socket_address(address)
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0
        self.withheld: list[str] = []  # why the last watchdog ping was not sent

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """A notifier for `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket)."""
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            _log.debug("notify socket not supported, notifications disabled", address=address)
            address = None
        return cls(
            address,
            watchdog_usec=_parse_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_parse_int(environ.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def __repr__(self) -> str:
        return (
            f"<Notifier address={self._address!r} watchdog={self.watchdog_interval()} "
            f"sent={self.sent} failed={self._failed}>"
        )

    def notify(self, *lines: str) -> bool:
        """Send one datagram of `KEY=value` lines; True if it left, False if disabled or failed."""
        if self._address is None or not lines:
            return False
        data = "\n".join(lines).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Non-blocking: a systemd that is not reading must not stall the event loop.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                _log.debug("sd_notify failed", error=str(exc), message=lines[0])
            return False
        self.sent += 1
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def reloading(self) -> bool:
        # systemd uses the timestamp to tell this reload's READY=1 from a late one of an earlier
        # reload; it must be CLOCK_MONOTONIC in microseconds.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """A one-line summary for `systemctl status`; newlines would end the field early."""
        line = " ".join(text.split())
        return self.notify(f"STATUS={redact(line)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of `$WATCHDOG_USEC`), or None if not asked for.

        `$WATCHDOG_PID` naming another process means the watchdog is meant for that one.
        """
        if self._address is None or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run_watchdog(self, stop: asyncio.Event, wedged: Callable[[], list[str]]) -> None:
        """Ping the watchdog every half `$WATCHDOG_USEC` while `wedged()` finds nothing stuck,
        until `stop` is set. Why pings are withheld is logged once, when it starts, and kept in
        `withheld` for /status.

        This runs on the event loop on purpose, never in a thread: a loop that is blocked or
        starved sends nothing, and systemd restarts the service.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        while not stop.is_set():
            reasons = self._check(wedged)
            if reasons and not self.withheld:
                _log.error("watchdog withheld: the daemon is stuck", reasons=reasons)
            elif self.withheld and not reasons:
                _log.info("watchdog resumed")
            self.withheld = reasons
            if not reasons:
                self.watchdog()
            try:
                async with asyncio.timeout(interval):
                    await stop.wait()
            except TimeoutError:
                pass

    @staticmethod
    def _check(wedged: Callable[[], list[str]]) -> list[str]:
        # A check that raises counts as stuck rather than ending the watchdog task (and with
        # it the task group that runs the daemon).
        try:
            return list(wedged())
        except Exception as exc:
            _log.warning("health check failed", exc_info=True)
            return [f"health check failed: {type(exc).__name__}"]


def _socket_address(address: str | None) -> bytes | None:
    if not address:
        return None
    raw = os.fsencode(address)
    # `@name` is Linux's abstract namespace, whose names start with a NUL byte.
    return b"\0" + raw[1:] if raw.startswith(b"@") else raw


def _parse_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
