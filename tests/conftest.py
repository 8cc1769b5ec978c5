"""Shared fixtures: the anyio backend, the callback receiver and daemon subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import DaemonProcess, Receiver, SandboxProcess


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
