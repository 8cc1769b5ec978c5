"""`qbo-events resync` end to end: the daemon as a subprocess against the sandbox, a company with
2,500 objects in the resources resynced, and a receiver checking every delivery."""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from harness import DaemonProcess, Receiver, SandboxProcess, wait_for
from qbo_events.quickbooks.meter import METERED
from qbo_events.quickbooks.resources import BY_NAME
from test_polling_e2e import polling_instance

REALM = "9341453908128517"
RESOURCES = ("customers", "invoices", "bills", "payments", "vendors")
SEED = 500  # objects per entity: 2,500 in RESOURCES
URLS = '"' + "|".join(RESOURCES) + '"'
INTERVAL = 60  # minutes: the polls stay out of the way


def resync(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", "resync", "--config", str(d.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def start(d: DaemonProcess, *args: str) -> str:
    done = resync(d, "--instance", "a", "--resources", ",".join(RESOURCES), *args)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id.startswith("rs_")
    return job_id


def live_objects(sandbox: SandboxProcess) -> dict[str, int]:
    counts = sandbox.stats()["objects"][REALM]
    return {name: counts[BY_NAME[name].entity] for name in RESOURCES}


def metered_calls(sandbox: SandboxProcess) -> int:
    kinds = sandbox.stats()["calls_by_realm"].get(REALM, {})
    return sum(count for kind, count in kinds.items() if kind in METERED)


def status_of(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.health("/status")[1]["instances"]["a"].get("resync") or {})


def ends(receiver: Receiver) -> list[dict[str, Any]]:
    return [e for e in receiver.events() if e["eventType"] == "RESYNC"]


def objects_delivered(receiver: Receiver) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(
        (e["objectType"], e["objectId"]) for e in receiver.events() if e["eventType"] != "RESYNC"
    )


def expected(sandbox: SandboxProcess) -> set[tuple[str, str]]:
    # The sandbox numbers each entity's objects from 1; none were deleted.
    return {
        (name, str(i)) for name, count in live_objects(sandbox).items() for i in range(1, count + 1)
    }


def daemon(
    sandbox: SandboxProcess,
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
    settings: str = "",
) -> DaemonProcess:
    instances = polling_instance(sandbox, "a", receiver.url, URLS, interval=INTERVAL)
    return daemon_factory(instances, settings=sandbox.quickbooks_settings() + settings)


def test_full_resync_delivers_every_object_once_and_ends_with_resync(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(seed=SEED)
    assert sum(live_objects(sandbox).values()) == 2500
    d = daemon(sandbox, daemon_factory, receiver, "monthly_call_budget = 1000\n").start()
    job_id = start(d, "--full")
    wait_for(lambda: ends(receiver), timeout=180, what="the RESYNC event")

    end = receiver.events()[-1]
    assert end["eventType"] == "RESYNC" and end["status"] == "completed"
    assert end["resyncId"] == job_id and end["objects"] == 2500
    assert end["resources"] == list(RESOURCES) and end["since"] is None
    delivered = objects_delivered(receiver)
    assert set(delivered) == expected(sandbox)
    assert set(delivered.values()) == {1}, "an object arrived more than once"
    assert receiver.bad_signatures == 0
    assert {e["eventType"] for e in receiver.events()[:-1]} <= {"CREATED", "UPDATED"}
    # Every page read inside the realm's limits, and well inside the month's budget.
    stats = sandbox.stats()
    assert stats["throttled_by_limits"] == 0
    assert metered_calls(sandbox) < 1000
    shown = status_of(d)
    assert shown["id"] == job_id and shown["state"] == "completed"
    assert shown["resources_done"] == shown["resources_total"] == len(RESOURCES)
    assert shown["objects"] == 2500
    table = subprocess.run(
        [sys.executable, "-m", "qbo_events", "status", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"a: resync {job_id} completed, resources 5/5, 2500 objects" in table.stdout

    # A second resync delivers them all again, with the same event ids: past the dedupe.
    first_ids = set(receiver.ids()[:-1])
    count = receiver.count()
    second = start(d, "--full")
    wait_for(lambda: len(ends(receiver)) == 2, timeout=180, what="the second RESYNC event")
    again = receiver.ids()[count:-1]
    assert len(again) == 2500 and set(again) == first_ids
    assert receiver.events()[-1]["resyncId"] == second


def test_a_kill_in_the_middle_resumes_and_every_object_arrives(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(seed=SEED)
    d = daemon(sandbox, daemon_factory, receiver).start()
    sandbox.faults(slow=0.5)  # each request half a second: time to kill between pages
    job_id = start(d, "--full")
    wait_for(lambda: status_of(d).get("objects", 0) >= 1000, timeout=120, what="a thousand found")
    assert status_of(d)["objects"] < 2500
    d.kill9()
    assert not ends(receiver)
    sandbox.faults(slow=0)
    d.start()
    wait_for(lambda: ends(receiver), timeout=180, what="the RESYNC event after the restart")

    end = receiver.events()[-1]
    assert end["eventType"] == "RESYNC" and end["status"] == "completed"
    assert end["resyncId"] == job_id and end["objects"] == 2500
    # At least once each: a page cut off by the kill may be delivered twice.
    assert set(objects_delivered(receiver)) == expected(sandbox)
    assert len(ends(receiver)) == 1
    assert receiver.bad_signatures == 0


def test_a_spent_budget_pauses_the_resync_and_cancel_ends_it(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(seed=SEED)
    budget = 4  # the first poll's CDC, then a few pages: not enough for 2,500 objects
    d = daemon(sandbox, daemon_factory, receiver, f"monthly_call_budget = {budget}\n").start()
    start(d, "--full")
    wait_for(
        lambda: "budget" in (status_of(d).get("last_error") or ""),
        timeout=60,
        what="the resync to pause on the budget",
    )
    shown = status_of(d)
    assert shown["state"] == "running" and shown["objects"] < 2500
    assert metered_calls(sandbox) <= budget

    # A stop leaves the job running; the restart takes it up again, still paused.
    assert d.stop() == 0
    d.start()
    wait_for(lambda: status_of(d).get("state") == "running", what="the job after the restart")
    assert status_of(d)["objects"] == shown["objects"]
    busy = resync(d, "--instance", "a", "--full")
    assert busy.returncode == 1 and "resync" in busy.stderr
    done = resync(d, "--instance", "a", "--cancel")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: ends(receiver), timeout=60, what="the RESYNC cancelled event")
    end = receiver.events()[-1]
    assert end["eventType"] == "RESYNC" and end["status"] == "cancelled"
    assert end["objects"] == shown["objects"] == len(objects_delivered(receiver))
    assert status_of(d)["state"] == "cancelled"
    assert metered_calls(sandbox) <= budget
    assert resync(d, "--instance", "a", "--cancel").returncode == 1


def test_a_resync_since_reads_with_cdc_where_it_can(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(seed=100)
    d = daemon(sandbox, daemon_factory, receiver).start()
    # The polls' first CDC read first, so that what follows is the resync's own.
    wait_for(lambda: sandbox.stats()["calls_by_realm"].get(REALM, {}).get("cdc"), what="a poll")
    before = dict(sandbox.stats()["calls_by_realm"][REALM])
    # The seeded objects changed two days ago; time-activities has no CDC: Query reads it.
    done = resync(
        d, "--instance", "a", "--resources", "customers,invoices,time-activities", "--since", "3d"
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: ends(receiver), timeout=120, what="the RESYNC event")

    end = receiver.events()[-1]
    assert end["status"] == "completed" and end["objects"] == 300
    assert end["since"] is not None and end["since"].endswith("Z")
    delivered = objects_delivered(receiver)
    assert set(delivered.values()) == {1}
    assert {kind for kind, _ in delivered} == {"customers", "invoices", "time-activities"}
    after = sandbox.stats()["calls_by_realm"][REALM]
    assert after.get("cdc", 0) - before.get("cdc", 0) == 2
    assert after.get("query", 0) - before.get("query", 0) == 1
