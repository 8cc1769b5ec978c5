"""The daemon's hold on its state directory: an exclusive lock, then the outbox open inside it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from qbo_events.errors import OutboxError, StartupError
from qbo_events.outbox import Outbox
from qbo_events.sqlite_files import prepare_state_dir

LOCK_FILE: Final = "daemon.lock"


class StateLock:
    """`flock` on `state_dir/daemon.lock` (0600, holding the pid): two daemons on one outbox
    would both deliver every event. The kernel drops the lock when the process ends, however
    it ends, so a stale file never blocks a start."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises StartupError, one line naming the directory and the cause."""
        where = f"state_dir {self.state_dir}"
        try:
            prepare_state_dir(self.state_dir)
        except (FileExistsError, NotADirectoryError):
            raise StartupError(f"{where} is not a directory") from None
        except OSError as exc:
            raise StartupError(f"{where} cannot be used: {exc.strerror or exc}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"{where} cannot be used: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _pid_in(fd)
            os.close(fd)
            raise StartupError(
                f"{where} is in use by another qbo-events (pid {other or 'unknown'})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock is what counts; the pid only names the holder
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __repr__(self) -> str:
        return f"<StateLock {self.path} held={self._fd is not None}>"


def _pid_in(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return ""


@contextlib.asynccontextmanager
async def held(state_dir: Path, outbox: Outbox) -> AsyncIterator[Outbox]:
    """The state directory locked for this daemon and its outbox open, or StartupError; the
    outbox closes before the lock is let go."""
    lock = StateLock(state_dir)
    lock.acquire()
    try:
        try:
            await outbox.open()
        except OutboxError as exc:
            raise StartupError(str(exc)) from None
        try:
            yield outbox
        finally:
            await outbox.close()
    finally:
        lock.release()
