"""Storage faults end to end, with the daemon as a subprocess: a full disk, a corrupt or
truncated database, a state directory that cannot be written, two daemons on one state_dir, and
the read-only commands beside a running daemon."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import (
    VERIFIER,
    DaemonProcess,
    Receiver,
    SandboxProcess,
    instance_toml,
    legacy_body,
    wait_for,
)
from test_cli import cli
from test_polling_e2e import delivered, expected, polling_instance, wait_first_polls

Factory = Callable[..., DaemonProcess]
REALM = "9341453908128517"  # the sandbox's first realm
WEBHOOK_REALM = "515"
AT = "2026-01-01T00:00:00.000Z"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("storage-fault tests mount a tmpfs and must run as root (CI does)")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
    with filler.open("ab", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 512)
    return filler


def log_events(d: DaemonProcess, *levels: str) -> list[str]:
    """The messages the daemon logged (of these levels, when given)."""
    events = []
    for line in d.stderr().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if not levels or record.get("level") in levels:
                events.append(str(record.get("event", "")))
    return events


def read_db(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def cursor_row(path: Path) -> list[tuple[object, ...]]:
    return read_db(path, "SELECT instance, resource, cursor FROM cursors ORDER BY 1, 2")


def webhook(n: int) -> bytes:
    return legacy_body(WEBHOOK_REALM, ("Invoice", str(n), "Create", AT))


# -- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_refuses_intake_keeps_what_was_accepted_and_recovers_without_restart(
    tmp_path: Path,
    daemon_factory: Factory,
    sandbox_factory: Callable[..., SandboxProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    instances = instance_toml("hooks", WEBHOOK_REALM, receiver.url) + polling_instance(
        sandbox, "acme", receiver.url, '["invoices"]', interval=0.02
    )
    # Retries a second apart, forty of them: the refused events must outlast the test's slow
    # moments without being dead-lettered.
    retries = "[delivery]\nretry_schedule = [" + ", ".join(["1"] * 40) + "]\n"
    d = daemon_factory(instances, settings=sandbox.quickbooks_settings() + retries)
    with tmpfs(d.state_dir, "4m"):
        outbox = d.state_dir / "outbox.sqlite3"
        d.start()
        wait_first_polls(d, "acme", 1)
        # Accepted before the disk fills, and not yet delivered: the receiver refuses them.
        refusing = True
        receiver.plan = lambda _id, _n: (503, {}) if refusing else (200, {})
        assert [d.post(webhook(n)) for n in range(5)] == [200] * 5
        wait_for(lambda: receiver.count() == 0 and len(receiver.attempts) >= 5, 30, "attempts")

        filler = fill(d.state_dir)
        assert d.post(webhook(100)) == 503
        status, body = d.health("/readyz")
        assert status == 503
        assert any("full" in reason for reason in body["reasons"]), body
        before = cursor_row(outbox)
        made = sandbox.change("Invoice", "Create", 3)
        # Every poll in the meantime fails to store what it found: the cursor must not move.
        polls = d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]
        wait_for(
            lambda: (
                d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]["last_poll_at"]
                > polls["last_poll_at"]
            ),
            30,
            "a poll while the disk is full",
        )
        assert [d.post(webhook(n)) for n in range(100, 110)] == [503] * 10
        assert cursor_row(outbox) == before
        assert read_db(outbox, "PRAGMA integrity_check") == [("ok",)]
        assert read_db(outbox, "SELECT COUNT(*) FROM outbox") == [(5,)]
        assert d.proc is not None and d.proc.poll() is None

        refusing = False
        filler.unlink()
        wait_for(lambda: d.health("/readyz")[0] == 200, 30, "/readyz once space is back")
        assert [d.post(webhook(n)) for n in range(100, 110)] == [200] * 10
        hooks = {str(n) for n in [*range(5), *range(100, 110)]}
        wait_for(
            lambda: hooks <= {e["objectId"] for e in receiver.events() if e["objectType"]},
            60,
            "every accepted webhook delivered",
        )
        wait_for(lambda: expected(made, "invoices") <= delivered(receiver), 60, "the polled")
        assert cursor_row(outbox) != before
        assert read_db(outbox, "PRAGMA integrity_check") == [("ok",)]
        events = log_events(d)
        assert events.count("outbox cannot write; intake refused until it can") == 1, events
        assert events.count("outbox writable again") == 1, events
        assert not any("webhook refused" in e for e in events), events
        # Nothing else about the storage above info: no line per request, poll or delivery.
        # (The config's warning is about the test's short poll interval; the endpoint's lines are
        # about the receiver this test makes refuse.)
        loud = [
            e
            for e in log_events(d, "warning", "error", "critical")
            if e != "config warning" and not e.startswith("endpoint ")
        ]
        assert loud == ["outbox cannot write; intake refused until it can"], events
        assert d.stop() == 0


# -- a corrupt or unusable state at start ---------------------------------------------------------


def run_once(d: DaemonProcess) -> subprocess.CompletedProcess[str]:
    return cli("run", "--config", str(d.config_path), timeout=60)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_of_random_bytes_stops_the_start_and_is_left_alone(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(instance_toml("hooks", WEBHOOK_REALM, "http://127.0.0.1:9/hook"))
    d.state_dir.mkdir(mode=0o700)
    outbox = d.state_dir / "outbox.sqlite3"
    outbox.write_bytes(os.urandom(3 * 4096 + 100))
    before = digest(outbox)
    result = run_once(d)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qbo-events: "), result.stderr
    assert str(outbox) in lines[0]
    assert digest(outbox) == before
    assert sorted(p.name for p in d.state_dir.iterdir()) == ["daemon.lock", "outbox.sqlite3"]


@pytest.mark.parametrize("at_page_boundary", [False, True], ids=["mid-page", "at a page boundary"])
def test_a_truncated_database_stops_the_start_and_is_left_alone(
    tmp_path: Path, daemon_factory: Factory, at_page_boundary: bool
) -> None:
    absent = Receiver()  # never started: the events stay in the outbox
    d = daemon_factory(instance_toml("hooks", WEBHOOK_REALM, absent.url)).start()
    assert all(d.post(webhook(n)) == 200 for n in range(300))
    assert d.stop() == 0
    outbox = d.state_dir / "outbox.sqlite3"
    size = outbox.stat().st_size
    assert size > 8 * 4096 and not (d.state_dir / "outbox.sqlite3-wal").exists()
    with outbox.open("r+b") as f:
        # SQLite itself notices the first; only the header's page count shows the second.
        f.truncate(size // 2 // 4096 * 4096 if at_page_boundary else size // 2 + 1000)
    before = digest(outbox)
    result = run_once(d)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(outbox) in lines[0], result.stderr
    assert digest(outbox) == before


def test_a_state_dir_that_is_a_file_stops_the_start(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    d = daemon_factory(instance_toml("hooks", WEBHOOK_REALM, "http://127.0.0.1:9/hook"))
    d.state_dir.write_text("not a directory\n")
    result = run_once(d)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(d.state_dir) in lines[0], result.stderr
    assert "state_dir" in lines[0]


def test_a_read_only_state_dir_stops_the_start(tmp_path: Path, daemon_factory: Factory) -> None:
    d = daemon_factory(instance_toml("hooks", WEBHOOK_REALM, "http://127.0.0.1:9/hook"))
    with tmpfs(d.state_dir, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(d.state_dir)], check=True)
        result = run_once(d)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(d.state_dir) in lines[0], result.stderr
    assert "read-only" in lines[0].lower()


# -- one daemon per state_dir, and the commands beside it -----------------------------------------


def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(
    tmp_path: Path, daemon_factory: Factory
) -> None:
    absent = Receiver()
    first = daemon_factory(
        instance_toml("hooks", WEBHOOK_REALM, absent.url),
        settings="[delivery]\nretry_schedule = [0.1]",
    ).start()
    (tmp_path / "second").mkdir()
    second = DaemonProcess(tmp_path / "second", instance_toml("hooks", WEBHOOK_REALM, absent.url))
    second.state_dir = first.state_dir
    second.write_config(instance_toml("hooks", WEBHOOK_REALM, absent.url))
    try:
        assert first.proc is not None
        result = run_once(second)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"qbo-events: state_dir {first.state_dir} is in use by another qbo-events"
            f" (pid {first.proc.pid})"
        ]
        lock = first.state_dir / "daemon.lock"
        assert lock.stat().st_mode & 0o777 == 0o600
        assert lock.read_text().strip() == str(first.proc.pid)
        # The read-only commands and `deliveries retry` work beside the running daemon.
        assert first.post(webhook(1)) == 200
        wait_for(lambda: first.health("/status")[1]["outbox"]["dead"] == 1, 30, "dead letter")
        listing = cli("deliveries", "list", "--dead", "--config", str(first.config_path))
        assert listing.returncode == 0, listing.stderr
        assert "1 dead-lettered deliveries" in listing.stdout
        again = cli("deliveries", "retry", "--config", str(first.config_path))
        assert again.returncode == 0, again.stderr
        assert "re-queued 1 dead-lettered deliveries" in again.stdout
        status = cli("status", "--config", str(first.config_path))
        assert status.returncode == 0, status.stderr
    finally:
        second.close()
    assert first.stop() == 0
    # The lock is released with the daemon: the next one starts.
    first.start()
    assert first.stop() == 0


def test_read_only_commands_never_create_a_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "nowhere" / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'state_dir = "{state}"\n[quickbooks]\nwebhook_verifier_token = "{VERIFIER}"\n'
        + instance_toml("hooks", WEBHOOK_REALM, "http://127.0.0.1:9/")
    )
    for args in (["deliveries", "list"], ["deliveries", "retry"]):
        result = cli(*args, "--config", str(config))
        assert result.returncode == 1, result.stderr
        outbox = state / "outbox.sqlite3"
        assert result.stderr.strip() == (
            f"qbo-events: no outbox at {outbox} (has the daemon run with this state_dir?)"
        )
        assert not (tmp_path / "nowhere").exists()


def test_retry_with_no_match_says_so_and_exits_1(tmp_path: Path, daemon_factory: Factory) -> None:
    d = daemon_factory(instance_toml("hooks", WEBHOOK_REALM, "http://127.0.0.1:9/hook")).start()
    assert d.stop() == 0
    by_instance = cli("deliveries", "retry", "--instance", "nope", "--config", str(d.config_path))
    assert by_instance.returncode == 1
    assert "no dead-lettered deliveries for instance nope" in by_instance.stderr
    by_event = cli("deliveries", "retry", "--event", "evt_x", "--config", str(d.config_path))
    assert by_event.returncode == 1
    assert "no dead-lettered delivery with event id evt_x" in by_event.stderr


def test_status_answers_when_the_outbox_cannot_be_counted(
    receiver: Receiver, daemon_factory: Factory
) -> None:
    daemon = daemon_factory(instance_toml("acme", WEBHOOK_REALM, receiver.url)).start()
    outbox = daemon.state_dir / "outbox.sqlite3"
    with sqlite3.connect(outbox) as conn:
        conn.execute("ALTER TABLE quarantine RENAME TO quarantine_hidden")
    status, body = daemon.health("/status")
    assert status == 200, body
    assert "quarantine" in body["outbox"]["counts_error"]
    assert "pending" not in body["outbox"]
    with sqlite3.connect(outbox) as conn:
        conn.execute("ALTER TABLE quarantine_hidden RENAME TO quarantine")
    status, body = daemon.health("/status")
    assert status == 200 and body["outbox"]["quarantined"] == 0
    assert "counts_error" not in body["outbox"]
