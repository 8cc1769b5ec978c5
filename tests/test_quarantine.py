"""The quarantine: list, show and retry in process on a tmp outbox, and the CLI beside a daemon."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for
from qbo_events import quarantine
from qbo_events.app import OUTBOX_FILE
from qbo_events.config import Config, loads
from qbo_events.connect.store import ConnectionStore
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.oauth import Tokens

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47.657Z"
NOT_A_LIST = b'{"eventNotifications": "not a list"}'
CONFIG = """
[quickbooks]
webhook_verifier_token = "verifier"
[[instances]]
name = "acme"
realm_id = "111"
event.vendor.type = "webhook"
event.notification.callback.url = "http://127.0.0.1:9/hook"
"""


def config() -> Config:
    return loads(CONFIG, environ={})


def outbox_event_ids(outbox: Outbox) -> list[str]:
    rows = outbox.query(lambda conn: conn.execute("SELECT event_id FROM outbox").fetchall())
    return [row[0] for row in rows]


# -- the operations, in process ------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_and_show(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.db") as outbox:
        await outbox.quarantine(NOT_A_LIST, "eventNotifications is not a list")
        await outbox.quarantine(b"\xffnot json", "body is not JSON")
        rows = await quarantine.list_quarantined(outbox)
        assert [(r.reason, r.size) for r in rows] == [
            ("eventNotifications is not a list", len(NOT_A_LIST)),
            ("body is not JSON", 9),
        ]
        assert rows[0].id < rows[1].id and rows[0].received_at > 0
        assert [r.id for r in await quarantine.list_quarantined(outbox, limit=1)] == [rows[0].id]
        assert await quarantine.count(outbox) == 2

        shown = await quarantine.show(outbox, rows[0].id)
        assert shown is not None and shown.is_json and shown.entry == rows[0]
        assert shown.body == '{\n  "eventNotifications": "not a list"\n}'
        raw = await quarantine.show(outbox, rows[1].id)
        assert raw is not None and not raw.is_json and raw.body == "\\xffnot json"
        assert await quarantine.show(outbox, 999) is None


@pytest.mark.anyio
async def test_retry_accepts_what_now_parses_and_keeps_the_rest_with_the_new_reason(
    tmp_path: Path,
) -> None:
    good = legacy_body("111", ("Invoice", "130", "Create", AT), ("Bill", "7", "Update", AT))
    elsewhere = legacy_body("999", ("Invoice", "1", "Create", AT))  # a realm nobody serves
    async with Outbox(tmp_path / "outbox.db") as outbox:
        await outbox.quarantine(NOT_A_LIST, "an older parser's reason")
        await outbox.quarantine(good, "an older parser's reason")
        await outbox.quarantine(elsewhere, "an older parser's reason")
        bad_id, good_id, elsewhere_id = [r.id for r in await quarantine.list_quarantined(outbox)]

        one = await quarantine.retry(outbox, config(), bad_id)
        assert one.tried == 1 and one.parsed == [] and one.new == 0
        assert [f.id for f in one.failing] == [bad_id]
        left = await quarantine.list_quarantined(outbox)
        assert len(left) == 3 and left[0].reason == one.failing[0].reason
        assert left[0].reason != "an older parser's reason"

        done = await quarantine.retry(outbox, config())
        assert done.tried == 3
        assert done.parsed == [good_id, elsewhere_id]
        assert [f.id for f in done.failing] == [bad_id]
        assert (done.events, done.new, done.unrouted) == (2, 2, 1)
        assert done.instances == ["acme"]
        assert [r.id for r in await quarantine.list_quarantined(outbox)] == [bad_id]
        assert len(outbox_event_ids(outbox)) == 2

        # The same body once more (QuickBooks retried it): its events are duplicates now.
        await outbox.quarantine(good, "again")
        again = await quarantine.retry(outbox, config())
        assert (again.events, again.new) == (2, 0) and len(again.parsed) == 1
        assert len(outbox_event_ids(outbox)) == 2
        assert await quarantine.retry(outbox, config(), good_id) == quarantine.Retried(
            tried=0, parsed=[], failing=[], events=0, new=0, unrouted=0, instances=[]
        )


@pytest.mark.anyio
async def test_retry_goes_through_the_quarantine_in_batches(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(250):
            body = legacy_body("111", ("Invoice", str(i), "Create", AT)) if i % 5 else NOT_A_LIST
            await outbox.quarantine(body, "old")
        done = await quarantine.retry(outbox, config())
        assert (done.tried, len(done.parsed), len(done.failing), done.new) == (250, 200, 50, 200)
        assert await quarantine.count(outbox) == 50


@pytest.mark.anyio
async def test_retry_routes_to_a_realm_learned_by_connecting(tmp_path: Path) -> None:
    late = CONFIG + (
        '[[instances]]\nname = "late"\nevent.vendor.type = "webhook"\n'
        'event.notification.callback.url = "http://127.0.0.1:9/hook"\n'
    )
    body = legacy_body("222", ("Invoice", "5", "Create", AT))
    async with Outbox(tmp_path / "outbox.db") as outbox:
        await outbox.quarantine(body, "old")
        await ConnectionStore(outbox).connect("late", "222", "Late Ltd", Tokens("r"), 1.0)
        done = await quarantine.retry(outbox, loads(late, environ={}))
        assert (done.new, done.unrouted, done.instances) == (1, 0, ["late"])


# -- the CLI beside a running daemon -------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "QBO_EVENTS_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", "quarantine", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


async def _quarantine_beside(path: Path, body: bytes) -> None:
    # Another process's write, as a body quarantined by an older parser would be.
    async with Outbox(path, create=False) as outbox:
        await outbox.quarantine(body, "unknown operation (an older parser)")


def test_cli_lists_shows_and_retries_while_the_daemon_runs_and_delivers(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "111", receiver.url)).start()
    config = ("--config", str(d.config_path))
    assert d.post(NOT_A_LIST) == 200  # signed, not understood: quarantined by the daemon
    good = legacy_body("111", ("Invoice", "130", "Create", AT))
    asyncio.run(_quarantine_beside(d.state_dir / OUTBOX_FILE, good))

    listed = cli("list", "--json", *config)
    assert listed.returncode == 0, listed.stderr
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [r["size"] for r in rows] == [len(NOT_A_LIST), len(good)]
    bad_id, good_id = rows[0]["id"], rows[1]["id"]
    table = cli("list", *config)
    assert table.returncode == 0 and "2 quarantined webhook bodies" in table.stdout
    assert "an older parser" in table.stdout

    shown = cli("show", str(good_id), *config)
    assert shown.returncode == 0, shown.stderr
    assert '"realmId": "111"' in shown.stdout and f"{len(good)} bytes" in shown.stdout
    missing = cli("show", "9999", *config)
    assert missing.returncode == 1 and "no quarantined body with id 9999" in missing.stderr

    retried = cli("retry", *config)
    assert retried.returncode == 0, retried.stderr
    assert "1 now parse" in retried.stdout and "1 still fail" in retried.stdout
    assert "accepted 1 new events" in retried.stdout
    # The daemon takes up the accepted event at its next rescan.
    wait_for(lambda: receiver.count() == 1, what="the retried event's delivery")
    assert receiver.events()[0]["objectId"] == "130" and receiver.bad_signatures == 0

    after = cli("list", "--json", *config)
    assert [orjson.loads(line)["id"] for line in after.stdout.splitlines()] == [bad_id]
    wait_for(lambda: d.health("/status")[1]["outbox"]["quarantined"] == 1, what="the count")
    gone = cli("retry", str(good_id), *config)
    assert gone.returncode == 1 and f"no quarantined body with id {good_id}" in gone.stderr
    still = cli("retry", str(bad_id), *config)
    assert still.returncode == 0 and f"still quarantined: {bad_id}:" in still.stdout
    assert d.stop() == 0
    assert receiver.count() == 1
