"""Delivery history and replay end to end: every attempt recorded, delivered events kept and
pruned, and delivered events sent again in order, across a kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for

Factory = Callable[..., DaemonProcess]
REALM = "111"
OBJECTS = 20


def cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", *args, "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def post_updates(d: DaemonProcess, rounds: range, objects: int = OBJECTS) -> None:
    """`objects` invoices updated once a round, a second apart, one webhook a round."""
    for second in rounds:
        at = f"2026-11-27T13:{second // 60:02d}:{second % 60:02d}Z"
        entities = [("Invoice", str(100 + i), "Update", at) for i in range(objects)]
        assert d.post(legacy_body(REALM, *entities)) == 200


def delivered_lines(d: DaemonProcess, *extra: str) -> list[dict[str, Any]]:
    shown = cli(
        d, "deliveries", "list", "--state", "delivered", "--json", "--limit", "5000", *extra
    )
    assert shown.returncode == 0, shown.stderr
    return [orjson.loads(line) for line in shown.stdout.splitlines()]


def used_pages(d: DaemonProcess) -> int:
    db = sqlite3.connect(f"file:{d.state_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free)
    finally:
        db.close()


def test_every_attempt_is_recorded_and_history_is_pruned(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    # Every fifth event is refused once, with a body the history keeps the head of.
    receiver.plan = lambda event_id, n: (500, {}) if n == 1 and hash(event_id) % 5 == 0 else (
        200, {}
    )  # fmt: skip
    instances = instance_toml("acme", REALM, receiver.url)
    d = daemon_factory(instances).start()
    post_updates(d, range(10))  # 200 events
    wait_for(lambda: len(set(receiver.ids())) == 200, timeout=60, what="200 deliveries")
    lines = wait_for(
        lambda: (found := delivered_lines(d)) and len(found) == 200 and found,
        what="200 delivered events in the history",
    )
    retried = {line["event_id"] for line in lines if line["attempts"] == 2}
    assert retried == {i for i, n in receiver.attempts.items() if n == 2} and retried
    assert all(line["attempts"] in (1, 2) for line in lines)
    assert {line["object_type"] for line in lines} == {"invoices"}
    one = lines[0]
    assert delivered_lines(d, "--object", f"invoices/{one['object_id']}", "--instance", "acme")
    assert len(delivered_lines(d, "--object", f"invoices/{one['object_id']}")) == 10

    shown = cli(d, "deliveries", "show", next(iter(retried)))
    assert shown.returncode == 0, shown.stderr
    assert "2 attempts:" in shown.stdout
    assert "HTTP 500" in shown.stdout and "HTTP 200" in shown.stdout
    assert f"http://127.0.0.1:{receiver.port}/hook" in shown.stdout
    assert '"eventType": "UPDATED"' in shown.stdout
    assert cli(d, "deliveries", "show", "evt_nothing").returncode == 1

    # History off: what was kept goes at once (a reload), and nothing more is kept.
    before = used_pages(d)
    d.write_config(instances, settings="[outbox]\nhistory_days = 0\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: delivered_lines(d) == [], what="the history to be pruned")
    post_updates(d, range(100, 110))
    wait_for(lambda: len(set(receiver.ids())) == 400, timeout=60, what="200 more deliveries")
    assert delivered_lines(d) == []
    assert used_pages(d) <= before
    assert d.stop() == 0


def test_replay_sends_the_same_events_again_in_order_across_a_kill(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", REALM, receiver.url)).start()
    post_updates(d, range(15))  # 300 events, 15 for each of 20 invoices
    wait_for(lambda: receiver.count() == 300, timeout=60, what="300 deliveries")
    first = receiver.ids()
    wait_for(lambda: len(delivered_lines(d)) == 300, what="300 delivered events in the history")

    dry = cli(d, "deliveries", "replay", "--instance", "acme", "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 300 deliveries" in dry.stdout
    one = cli(d, "deliveries", "replay", "--instance", "acme", "--event", first[0], "--dry-run")
    assert "would replay 1 deliveries" in one.stdout
    assert cli(d, "deliveries", "replay", "--instance", "acme").returncode == 2

    # The receiver lost its database, and answers 503 until it is back.
    back = threading.Event()
    receiver.plan = lambda _id, _n: (200, {}) if back.is_set() else (503, {})
    with receiver._lock:
        receiver.deliveries.clear()
    queued = cli(d, "deliveries", "replay", "--instance", "acme", "--since", "1h")
    assert queued.returncode == 0, queued.stderr
    assert "queued 300 deliveries to acme again" in queued.stdout
    wait_for(lambda: sum(receiver.attempts.values()) > 300, what="the replay to be tried")
    d.kill9()
    d.start()
    back.set()
    # New events keep flowing beside the replay.
    post_updates(d, range(200, 202))
    wait_for(lambda: len(set(receiver.ids())) == 340, timeout=90, what="the replay and 40 new")
    assert set(first) <= set(receiver.ids())
    assert receiver.bad_signatures == 0

    # Each invoice's replayed events arrive in their original order.
    order: dict[str, list[str]] = defaultdict(list)
    for event in receiver.events():
        order[event["objectId"]].append(event["date"])
    for dates in order.values():
        assert dates == sorted(dates)
    assert d.stop() == 0
