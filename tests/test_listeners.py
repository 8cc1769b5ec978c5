"""The daemon's listeners at start-up and on reload: bind failures are one line and exit 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from harness import DaemonProcess, Receiver, free_port, instance_toml, legacy_body, wait_for

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47Z"
# TEST-NET-1 (RFC 5737): no host has it, so binding it fails locally; nothing is sent.
FOREIGN = "192.0.2.1"


def run_to_exit(d: DaemonProcess) -> tuple[int, str]:
    d.start(wait=False)
    assert d.proc is not None
    code = d.proc.wait(30)
    return code, d.stderr()


def one_line(stderr: str) -> str:
    """The error line: the last one, with no traceback (log lines may come before it)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, stderr
    return lines[-1]


def test_a_webhook_port_in_use_is_one_line_and_exit_2(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "7001", receiver.url))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", d.webhook_port))
        taken.listen(1)
        code, stderr = run_to_exit(d)
    assert code == 2
    assert one_line(stderr) == (
        f"qbo-events: http.webhook_listen 127.0.0.1:{d.webhook_port}: address already in use"
    )


def test_a_health_address_not_on_this_host_is_one_line_and_exit_2(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(
        instance_toml("acme", "7002", receiver.url),
        settings=f'[http]\nhealth_listen = "{FOREIGN}:{free_port()}"',
    )
    code, stderr = run_to_exit(d)
    assert code == 2
    line = one_line(stderr)
    assert line.startswith(f"qbo-events: http.health_listen {FOREIGN}:"), line
    assert line.endswith(": address not available on this host"), line


@pytest.mark.parametrize("webhook_host", ["127.0.0.1", "0.0.0.0"])
def test_equal_listen_addresses_are_a_config_error_in_check_and_run(
    daemon_factory: Factory, receiver: Receiver, webhook_host: str
) -> None:
    port = free_port()
    d = daemon_factory(
        instance_toml("acme", "7003", receiver.url),
        settings=(
            f'[http]\nwebhook_listen = "{webhook_host}:{port}"\nhealth_listen = "127.0.0.1:{port}"'
        ),
    )
    expected = (
        f"config: http.health_listen: 127.0.0.1:{port} clashes with http.webhook_listen"
        f" {webhook_host}:{port} (one port, overlapping addresses)"
    )
    check = subprocess.run(
        [sys.executable, "-m", "qbo_events", "check", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 2
    assert one_line(check.stderr) == expected
    code, stderr = run_to_exit(d)
    assert code == 2
    assert one_line(stderr) == expected


def status(d: DaemonProcess) -> dict[str, Any]:
    code, body = d.health("/status")
    assert code == 200
    return dict(body)


def test_a_reload_onto_a_port_in_use_is_rejected_and_the_old_listener_stays(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "7004", receiver.url)).start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        d.write_config(
            instance_toml("acme", "7004", receiver.url),
            settings=f'[http]\nwebhook_listen = "127.0.0.1:{busy}"',
        )
        d.signal(signal.SIGHUP)
        wait_for(lambda: status(d)["last_reload"]["ok"] is False, what="the rejected reload")
    assert status(d)["last_reload"]["error"] == [
        f"http.webhook_listen 127.0.0.1:{busy}: address already in use"
    ]
    assert d.post(legacy_body("7004", ("Invoice", "1", "Create", AT))) == 200
    wait_for(lambda: receiver.count() == 1, what="the delivery through the old listener")
    assert d.stop() == 0
