"""`qbo-events sandbox`: its arguments, its banner, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from qbo_events.sandbox import SandboxOptions, add_arguments, run_command
from qbo_events.sandbox.command import options_from

SCRIPT = """
import argparse, sys
from qbo_events.sandbox import add_arguments, run_command
parser = argparse.ArgumentParser()
add_arguments(parser)
sys.exit(run_command(parser.parse_args(sys.argv[1:])))
"""


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_follow_the_spec() -> None:
    options = options_from(_parse())
    assert (options.host, options.port, options.seed, options.rate) == ("127.0.0.1", 8085, 10, 0)
    assert options.webhook_format == "legacy" and options.webhook_url == ""
    assert options.realm_ids == SandboxOptions().realm_ids


def test_realm_ids_repeat_and_values_carry_through() -> None:
    args = _parse(
        "--realm-id", "1", "--realm-id", "2", "--port", "0", "--webhook-format", "cloudevents",
        "--seed", "3", "--rate", "2.5", "--client-id", "abc", "--refresh-token", "rt",
    )  # fmt: skip
    options = options_from(args)
    assert options.realm_ids == ("1", "2")
    assert options.first_refresh_tokens() == {"1": "rt", "2": "rt-2"}
    assert (options.port, options.seed, options.rate, options.client_id) == (0, 3, 2.5, "abc")
    assert options.webhook_format == "cloudevents"


@pytest.mark.parametrize(
    "argv", [("--seed", "-1"), ("--rate", "-2"), ("--port", "70000"), ("--realm-id", "1") * 2]
)
def test_bad_values_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(_parse(*argv)) == 2
    assert "qbo-events sandbox:" in capsys.readouterr().err


def test_runs_until_sigterm_and_prints_every_option() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "--port", "0", "--seed", "2", "--realm-id", "77"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        banner = first
        while "realm id:" not in banner:
            banner += process.stdout.readline()
        labels = ("client id:", "client secret:", "auth code:", "verifier token:", "webhook url:",
                  "webhook format:", "seed:", "rate:", "token url:")  # fmt: skip
        for label in labels:
            assert label in banner
        assert "realm id:        77  refresh token: sandbox-refresh-token" in banner
        with urllib.request.urlopen(f"{match.group(1)}/_sandbox/stats", timeout=5) as response:
            assert response.status == 200 and response.headers["intuit_tid"]
        # The control URL the banner prints answers with the list of control endpoints.
        control = re.search(r"control api: +(\S+)", banner)
        assert control, banner
        with urllib.request.urlopen(control.group(1), timeout=5) as response:
            assert response.status == 200 and json.load(response)["endpoints"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
