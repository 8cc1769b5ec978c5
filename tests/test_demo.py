"""`qbo-events demo` end to end: it must deliver every change it makes, verified, and exit 0."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_delivers_every_change_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qbo_events", "demo", "--duration", "5", "--rate", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every change delivered" in result.stdout
    made = int(re.search(r"changes made\s+(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    delivered = int(re.search(r"events delivered\s+(\d+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert made >= 5 and delivered >= made
    assert re.search(r"signature failures\s+0\b", result.stdout)
    assert re.search(r"duplicate deliveries\s+0\b", result.stdout)


def test_demo_refuses_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qbo_events", "demo", "--rate", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--rate" in result.stderr
