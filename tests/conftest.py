"""Shared fixtures: the anyio backend, the callback receiver and daemon subprocesses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from harness import DaemonProcess, Receiver, SandboxProcess


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that configure logging in this process: leave it as it was found."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(instances: str, *, settings: str = "") -> DaemonProcess:
        d = DaemonProcess(tmp_path, instances, settings=settings)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    made: list[SandboxProcess] = []

    def make(**options: object) -> SandboxProcess:
        s = SandboxProcess(tmp_path, **options)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
