"""Polling end to end: the sandbox changes objects, the daemon polls and delivers the events."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess, Receiver, SandboxProcess, instance_toml, wait_for

REALM = "9341453908128517"


def polling_instance(
    sandbox: SandboxProcess,
    name: str,
    url: str,
    urls: str,
    realm: str = REALM,
    vendor: str = "polling",
    interval: float = 0.02,
    overlap: int = 5,
) -> str:
    return instance_toml(
        name, realm, url, vendor=vendor,
        extra=(
            f'refresh_token = "{sandbox.realm_refresh_token(realm)}"\n'
            f"event.poller.refresh_interval = {interval}\n"
            f"event.poller.urls = {urls}\n"
            f"event.poller.overlap = {overlap}\n"
        ),
    )  # fmt: skip


def wait_first_polls(d: DaemonProcess, instance: str, count: int) -> None:
    def polled() -> bool:
        loops = d.health("/status")[1]["instances"][instance]["resources"]
        return len(loops) == count and all(r["last_success_at"] for r in loops.values())

    wait_for(polled, what=f"a first poll of {count} resources")


def delivered(receiver: Receiver) -> set[tuple[str, str, str, str]]:
    return {(e["objectType"], e["objectId"], e["eventType"], e["date"]) for e in receiver.events()}


def expected(changes: list[dict[str, str]], object_type: str) -> set[tuple[str, str, str, str]]:
    return {(object_type, c["object_id"], c["event_type"], c["last_updated"]) for c in changes}


def test_creates_updates_deletes_of_invoices_and_time_activities(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices", "time-activities"]'),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 2)
    # Polling sees each object's latest state, so each step waits for its events before the
    # next step changes the same objects again.
    invoices = sandbox.change("Invoice", "Create", 3)
    activities = sandbox.change("TimeActivity", "Create", 2)
    want = expected(invoices, "invoices") | expected(activities, "time-activities")
    wait_for(lambda: want <= delivered(receiver), timeout=30, what="the creates")
    first, second = invoices[0]["object_id"], invoices[1]["object_id"]
    invoices = sandbox.change("Invoice", "Update", 1, id=first)
    invoices += sandbox.change("Invoice", "Delete", 1, id=second)
    activities = sandbox.change("TimeActivity", "Update", 1, id=activities[0]["object_id"])
    want = expected(invoices, "invoices") | expected(activities, "time-activities")
    wait_for(lambda: want <= delivered(receiver), timeout=30, what="the updates and delete")
    kinds = {(t, k) for t, _, k, _ in delivered(receiver)}
    assert {("invoices", "CREATED"), ("invoices", "UPDATED"), ("invoices", "DELETED")} <= kinds
    assert {("time-activities", "CREATED"), ("time-activities", "UPDATED")} <= kinds
    assert receiver.bad_signatures == 0
    assert len(receiver.ids()) == len(set(receiver.ids()))
    assert receiver.deliveries[0]["body"]["message"]["source"] == "polling"
    metrics = d.health("/metrics")[1]
    assert 'qbo_events_poll_lag_seconds{resource="invoices"}' in metrics
    assert 'qbo_events_poll_duration_seconds_count{resource="time-activities"}' in metrics
    assert 'qbo_events_quickbooks_api_calls_total{status="200"}' in metrics
    assert 'qbo_events_events_accepted_total{source="polling"}' in metrics
    assert d.stop() == 0


# -- helpers for the tests below ------------------------------------------------------------------


def loops(d: DaemonProcess, instance: str) -> dict[str, Any]:
    return dict(d.health("/status")[1]["instances"][instance]["resources"])


def wait_next_polls(d: DaemonProcess, instance: str, timeout: float = 20.0) -> None:
    """Until every loop of `instance` has finished a poll that started after this call."""
    marks = {name: loop["last_poll_at"] for name, loop in loops(d, instance).items()}

    def polled() -> bool:
        now = loops(d, instance)
        return all(
            (loop["last_poll_at"] or "") > (marks[name] or "")
            and (loop["last_success_at"] or "") >= (loop["last_poll_at"] or "~")
            for name, loop in now.items()
        )

    wait_for(polled, timeout, f"a further poll of every resource of {instance}")


def wait_delivered(
    receiver: Receiver, want: set[tuple[str, str, str, str]], timeout: float, what: str
) -> None:
    """Until every event of `want` has arrived; on time-out, name the missing ones."""
    try:
        wait_for(lambda: want <= delivered(receiver), timeout, what)
    except AssertionError as exc:
        missing = sorted(want - delivered(receiver))
        raise AssertionError(f"{exc}; {len(missing)} missing: {missing[:10]}") from None


def duplicates(receiver: Receiver) -> int:
    ids = receiver.ids()
    return len(ids) - len(set(ids))


def api_calls(sandbox: SandboxProcess, route: str) -> int:
    """Calls the sandbox answered on one route (`cdc`, `query`, `token`), by any status."""
    requests = sandbox.stats()["requests"]
    return sum(n for key, n in requests.items() if key.rpartition(" ")[0] == route)


# -- a burst beyond CDC's cap ---------------------------------------------------------------------


def test_burst_beyond_the_cdc_cap_is_delivered_exactly_once(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.1),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 1)
    cdc_before, query_before = api_calls(sandbox, "cdc"), api_calls(sandbox, "query")
    # The whole burst lands well inside the 6 s interval, so one poll meets all of it: CDC
    # answers 1,000 of the 2,503 and the poller has to complete the window with paged Query.
    began = time.monotonic()
    changes = sandbox.change("Invoice", "Create", 2500)
    for seeded in ("1", "2", "3"):
        changes += sandbox.change("Invoice", "Update", 1, id=seeded)
    assert time.monotonic() - began < 2.0, "the burst must fit well inside one poll interval"
    assert len({c["object_id"] for c in changes}) == 2503

    want = expected(changes, "invoices")
    wait_for(lambda: receiver.count() >= len(want), timeout=30, what="2,503 deliveries")
    assert delivered(receiver) == want
    # The burst was read by one CDC call at its cap, completed by at least three Query pages.
    assert api_calls(sandbox, "cdc") - cdc_before >= 1
    assert api_calls(sandbox, "query") - query_before >= 3
    # A later poll re-reads the overlap; nothing is delivered twice.
    wait_next_polls(d, "acme")
    assert receiver.count() == len(want) == 2503
    assert duplicates(receiver) == 0
    assert receiver.bad_signatures == 0
    assert loops(d, "acme")["invoices"]["last_error"] is None
    assert d.stop() == 0


# -- faults the daemon recovers from --------------------------------------------------------------


def watch_until(
    d: DaemonProcess, done: Callable[[], bool], what: str, timeout: float = 25.0
) -> list[str]:
    """Sample the invoices loop's last_error until `done()` and the error is clear again."""
    seen: list[str] = []

    def finished() -> bool:
        error = loops(d, "acme")["invoices"]["last_error"]
        if error:
            seen.append(error)
        return error is None and done()

    wait_for(finished, timeout, what)
    return seen


@pytest.mark.parametrize("fault", ["429", "503"])
def test_throttling_and_server_errors_surface_in_status_then_clear(
    fault: str,
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.05),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 1)
    if fault == "429":
        # Five 429s: the client waits out three of them itself (Retry-After: 1 s each), the
        # fourth fails the poll, the fifth delays the next one. QuickBooks sends no Retry-After
        # (its docs say wait 60 s, the client's default); the sandbox sends one only when asked.
        sandbox.faults(throttle=5, retry_after=1)
    else:
        # Two polls in a row fail; the loop backs off and the third succeeds.
        sandbox.faults(errors=2, error_status=503)
    changes = sandbox.change("Invoice", "Create", 2)
    want = expected(changes, "invoices")
    began = time.monotonic()
    seen = watch_until(d, lambda: want <= delivered(receiver), "recovery and the creates")
    assert seen, "the failed poll should show in /status"
    if fault == "429":
        assert "throttled" in seen[0]
        assert sandbox.stats()["requests"]["cdc 429"] == 5
        # Recovery took seconds, not the minute a 429 without Retry-After costs.
        assert time.monotonic() - began < 20
        pauses = d.health("/status")[1]["quickbooks"]["realms"][REALM]["pauses"]
        assert pauses >= 5
    else:
        assert "503" in seen[0] and "QuickBooksUnavailable" in seen[0]
        assert sandbox.stats()["requests"]["cdc 503"] == 2
    assert delivered(receiver) == want and duplicates(receiver) == 0
    assert loops(d, "acme")["invoices"]["state"] in ("waiting", "polling")
    assert d.stop() == 0


def test_expired_access_token_is_refreshed_and_the_call_retried(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.05),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 1)
    tokens = d.health("/status")[1]["instances"]["acme"]["tokens"]
    assert tokens["refreshes"] == 1
    sandbox.faults(expire_tokens=True)
    changes = sandbox.change("Invoice", "Create", 2)
    want = expected(changes, "invoices")
    # A 401 that one refresh cures is not a failure of the loop: the call is retried at once,
    # so the poll succeeds and last_error never shows.
    seen = watch_until(d, lambda: want <= delivered(receiver), "the creates after a 401")
    assert seen == []
    assert sandbox.stats()["requests"]["cdc 401"] == 1
    tokens = d.health("/status")[1]["instances"]["acme"]["tokens"]
    assert tokens["refreshes"] == 2 and tokens["refresh_failures"] == 0
    assert tokens["access_expires_at"] > time.time() + 600
    assert delivered(receiver) == want and duplicates(receiver) == 0
    assert d.stop() == 0


# -- refresh tokens -------------------------------------------------------------------------------


def test_rotated_refresh_token_survives_a_restart(
    tmp_path: Path,
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    original = sandbox.refresh_token
    config = polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.05)
    d = daemon_factory(config, settings=sandbox.quickbooks_settings()).start()
    wait_first_polls(d, "acme", 1)
    # The first refresh rotated the token: the sandbox now holds a successor of the original.
    assert sandbox.stats()["token_refreshes"] == 1
    rotated = sandbox.stats()["refresh_tokens"][REALM]
    assert rotated and original not in rotated
    assert d.stop() == 0

    # While it is down: a change, and the access token it saved dies, so the restarted daemon
    # must refresh. The config still holds the original token; the daemon must use the rotated
    # one it stored. Using that successor is what ends the original's grace (sandbox rule:
    # a superseded token works until its successor has been used once).
    changes = sandbox.change("Invoice", "Create", 1)
    sandbox.faults(expire_tokens=True)
    assert original in d.config_path.read_text()
    d.start()
    want = expected(changes, "invoices")
    wait_for(lambda: want <= delivered(receiver), timeout=20, what="the change made while down")
    assert sandbox.stats()["token_refreshes"] == 2
    tokens = d.health("/status")[1]["instances"]["acme"]["tokens"]
    assert not tokens["needs_reauthorization"] and tokens["refresh_failures"] == 0
    assert d.stop() == 0

    # A daemon with an empty state dir has only the original token, which is now refused.
    (tmp_path / "fresh").mkdir()
    fresh = DaemonProcess(tmp_path / "fresh", config, settings=sandbox.quickbooks_settings())
    try:
        # Not ready once refused (its only instance cannot work), so no wait for /readyz.
        fresh.start(wait=False)

        def refused() -> bool:
            try:
                status = fresh.health("/status")[1]
            except OSError:  # not listening yet
                return False
            return status["instances"]["acme"].get("state") == "needs re-authorization"

        wait_for(refused, 20, "the original refresh token to be refused")
        assert fresh.health("/readyz") == (
            503,
            {"status": "not ready", "reasons": ["instance acme: needs re-authorization"]},
        )
        loop = loops(fresh, "acme")["invoices"]
        assert loop["state"] == "needs re-authorization" and "invalid_grant" in loop["last_error"]
        assert sandbox.stats()["requests"]["token 400"] == 1
        assert "quickbooks.needs_reauthorization" in fresh.stderr()
        assert fresh.stop() == 0
    finally:
        fresh.close()


REALM_B = "4620816365178912"


@pytest.mark.parametrize("when", ["before start", "while running"])
def test_invalid_grant_on_one_instance_leaves_the_other_delivering(
    when: str,
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(REALM, REALM_B))
    instances = polling_instance(
        sandbox, "A", receiver.url, '["invoices", "customers"]', interval=0.05
    ) + polling_instance(
        sandbox, "B", receiver.url, '["invoices", "customers"]', realm=REALM_B, interval=0.05
    )
    if when == "before start":
        sandbox.faults(revoke=REALM)
    d = daemon_factory(instances, settings=sandbox.quickbooks_settings()).start()
    wait_first_polls(d, "B", 2)
    if when == "while running":
        wait_first_polls(d, "A", 2)
        # The connection is cut: A's access token dies at once and its refresh token is refused.
        sandbox.faults(revoke=REALM)

    def refused() -> bool:
        a = d.health("/status")[1]["instances"]["A"]
        loops = a["resources"].values()
        return a.get("state") == "needs re-authorization" and all(
            loop["state"] == "needs re-authorization" for loop in loops
        )

    sandbox.change("Invoice", "Create", 2, realm_id=REALM)
    b_changes = sandbox.change("Invoice", "Create", 2, realm_id=REALM_B)
    b_changes += sandbox.change("Customer", "Update", 1, realm_id=REALM_B)
    wait_for(refused, 20, "instance A to need re-authorization")
    want = expected(b_changes[:2], "invoices") | expected(b_changes[2:], "customers")
    wait_for(lambda: want <= delivered(receiver), 20, "instance B's changes")

    status = d.health("/status")[1]["instances"]
    assert status["A"]["tokens"]["needs_reauthorization"] is True
    assert all(
        loop["state"] == "needs re-authorization" and "invalid_grant" in loop["last_error"]
        for loop in status["A"]["resources"].values()
    )
    assert "state" not in status["B"] and not status["B"]["tokens"]["needs_reauthorization"]
    assert all(loop["last_error"] is None for loop in status["B"]["resources"].values())
    metrics = d.health("/metrics")[1]
    assert 'qbo_events_needs_reauthorization{instance="A"} 1.0' in metrics
    assert 'qbo_events_needs_reauthorization{instance="B"} 0.0' in metrics

    # No change of realm A was delivered (they came after the cut), only the one event saying
    # its grant is lost; B's changes keep arriving.
    def changed_instances() -> set[str]:
        messages = [m["body"]["message"] for m in receiver.deliveries]
        return {m["instanceId"] for m in messages if m["source"] != "connection"}

    def lost() -> list[tuple[str, str]]:
        messages = [m["body"]["message"] for m in receiver.deliveries]
        return [
            (m["instanceId"], m["events"][0]["status"])
            for m in messages
            if m["source"] == "connection"
        ]

    assert changed_instances() == {"B"}
    more = sandbox.change("Invoice", "Update", 1, realm_id=REALM_B, id=b_changes[0]["object_id"])
    wait_for(lambda: expected(more, "invoices") <= delivered(receiver), 20, "a later B change")
    assert changed_instances() == {"B"}
    wait_for(lost, 20, "A's needs_reauthorization event")
    assert lost() == [("A", "needs_reauthorization")]
    assert duplicates(receiver) == 0
    assert d.stop() == 0


# -- kill -9 while polling ------------------------------------------------------------------------

POLLED = {"Invoice": "invoices", "Customer": "customers", "TimeActivity": "time-activities"}
# What the changer does; TimeActivity deletes are left out, as polling cannot see them (hard
# deletes of a Query-only resource, SPEC 7.1).
OPERATIONS = [
    ("Invoice", "Create"), ("Invoice", "Update"), ("Invoice", "Delete"), ("Invoice", "Void"),
    ("Invoice", "Emailed"),
    ("Customer", "Create"), ("Customer", "Update"), ("Customer", "Delete"), ("Customer", "Merge"),
    ("TimeActivity", "Create"), ("TimeActivity", "Update"),
]  # fmt: skip


class Changer(threading.Thread):
    """Changes the polled entities every `pause` seconds until stopped."""

    def __init__(self, sandbox: SandboxProcess, pause: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.sandbox = sandbox
        self.pause = pause
        self.halt = threading.Event()
        self.made = 0
        self.rng = random.Random(11)

    def run(self) -> None:
        while not self.halt.wait(self.pause):
            entity, operation = self.rng.choice(OPERATIONS)
            try:
                self.made += len(self.sandbox.change(entity, operation))
            except urllib.error.HTTPError:  # no object left that can take it
                self.made += len(self.sandbox.change(entity, "Create"))

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def test_kill_9_while_polling_skips_no_change(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(
            sandbox, "acme", receiver.url, '["invoices", "customers", "time-activities"]',
            interval=0.05, overlap=0,
        ),
        settings=sandbox.quickbooks_settings(),
    ).start()  # fmt: skip
    wait_first_polls(d, "acme", 3)
    # Slow answers stretch each poll, so a kill lands inside one, at a random point of it (the
    # call, or between the answer and the commit of its events and cursor).
    sandbox.faults(slow=0.2)
    changer = Changer(sandbox)
    changer.start()
    moments = random.Random(5)

    def kill_while_polling() -> None:
        def polling() -> bool:
            return any(loop["state"] == "polling" for loop in loops(d, "acme").values())

        wait_for(polling, 10, "a poll in progress")
        threading.Event().wait(moments.uniform(0.0, 0.4))
        d.kill9()
        d.start()

    try:
        # One kill while changes keep coming ...
        wait_for(lambda: receiver.count() >= 5, 20, "deliveries before the first kill")
        kill_while_polling()
        wait_for(lambda: receiver.count() >= 15, 20, "deliveries after the first restart")
    finally:
        changer.stop()
    # ... and one just after they stop, while the last of them are being read: those objects
    # change no more, so nothing later could cover for a change a crash made the poller skip.
    kill_while_polling()
    sandbox.faults(slow=0)
    assert changer.made >= 50

    # Polling sees each object's latest state only: a change followed by another change of the
    # same object before the next poll is legitimately never seen. So the rule is: for every
    # object the sandbox changed, the event of its LAST change is delivered; and every delivered
    # event is the event of some change in the log (none invented).
    log = [c for c in sandbox.change_log() if c["entity"] in POLLED]
    assert len(log) == changer.made
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for change in log:
        last[(change["entity"], change["object_id"])] = change
    want = {
        (POLLED[c["entity"]], c["object_id"], c["event_type"], c["last_updated"])
        for c in last.values()
    }
    every = {(POLLED[c["entity"]], c["object_id"], c["event_type"], c["last_updated"]) for c in log}
    wait_delivered(receiver, want, 30, "the last change of every object")
    assert delivered(receiver) <= every
    # At-least-once: only deliveries in flight at a kill may repeat (16 per endpoint at most).
    assert duplicates(receiver) <= 2 * 16
    assert receiver.bad_signatures == 0
    assert d.stop() == 0


def test_changes_made_before_a_resource_first_polls_are_delivered(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    # Two instances spread over a 12 s interval: one polls at once, the other about 6 s later.
    # Its first cursor is the daemon's start, so a change made before its first poll counts.
    sandbox = sandbox_factory(realms=(REALM, REALM_B))
    realms = {"A": REALM, "B": REALM_B}
    instances = "".join(
        polling_instance(
            sandbox, name, receiver.url, '["invoices"]', realm=realm, interval=0.2, overlap=0
        )
        for name, realm in realms.items()
    )
    d = daemon_factory(instances, settings=sandbox.quickbooks_settings()).start()
    status = d.health("/status")[1]["instances"]
    waiting = [n for n in realms if not status[n]["resources"]["invoices"]["last_success_at"]]
    assert waiting, "both instances polled already: the spread is gone"
    made = sandbox.change("Invoice", "Create", 2, realm_id=realms[waiting[0]])
    want = expected(made, "invoices")
    wait_for(lambda: want <= delivered(receiver), timeout=30, what="the early changes")


def test_a_backfill_older_than_cdc_allows_reads_live_objects_with_query(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    # CDC refuses a window older than 30 days; the poller reads the live objects with Query.
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).isoformat(timespec="seconds")
    sandbox = sandbox_factory(seed=3)
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]')
        + f'event.poller.since = "{since}"\n',
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_for(lambda: len(delivered(receiver)) >= 3, what="the seeded invoices")
    assert {t for t, *_ in delivered(receiver)} == {"invoices"}
    loop = d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]
    assert loop["last_error"] is None and loop["last_success_at"]
    assert "older than the 30 days CDC keeps" in d.stderr()


def test_sigterm_does_not_wait_for_a_hanging_poll(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling_instance(sandbox, "acme", receiver.url, '["invoices"]', interval=0.02),
        settings=sandbox.quickbooks_settings(),
    ).start()
    wait_first_polls(d, "acme", 1)
    sandbox.faults(slow=60)  # every API answer now takes a minute
    wait_for(
        lambda: (
            d.health("/status")[1]["instances"]["acme"]["resources"]["invoices"]["state"]
            == "polling"
        ),
        what="a poll to hang",
    )
    began = time.monotonic()
    assert d.stop(timeout=30) == 0
    # Polls under way get one second; nothing waits for the sandbox's minute.
    assert time.monotonic() - began < 8
    sandbox.faults(slow=0)
