"""The chaos scenario: the daemon under mixed load, killed with SIGKILL at random and restarted.

Shared by tests/test_chaos.py (sized for CI) and bench/chaos.py (longer runs). One seeded
`random.Random` decides everything the run controls: the changes, the webhook posts, the
receiver's moods, how long the daemon lives between kills, and the config changes.
"""

from __future__ import annotations

import math
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from chaos_checks import (
    Duplicates,
    Spec,
    Want,
    duplicates,
    invented,
    kill_point_problems,
    missing,
    order_violations,
    ordered_objects,
    pending_seqs,
    read_outbox,
    seq_order_violations,
    want,
)
from chaos_load import REALM_1, REALM_2, TIMEOUT, Changer, MoodyReceiver, Poster
from harness import DaemonProcess, SandboxProcess, instance_toml, wait_for

OUTBOX = "outbox.sqlite3"
# Many short retries: a bad spell of the receiver lasts seconds, so nothing is dead-lettered.
RETRY_SCHEDULE = [0.1, 0.2, 0.3] + [0.5] * 57
POLLED = ("invoices", "customers")


@dataclass
class Layout:
    """The instances and settings of the daemon's config; the run mutates it between kills."""

    receiver_url: str
    sandbox: SandboxProcess
    interval: dict[str, float] = field(default_factory=lambda: {"poll1": 0.02, "hyb2": 0.02})
    overlap: dict[str, int] = field(default_factory=lambda: {"poll1": 5, "hyb2": 5})
    poll1_present: bool = True
    poll1_vendors: bool = False  # a resource added and removed by config changes
    workers: int = 16
    in_flight: int = 16
    durability: str = "full"
    max_pending: int = 1_000_000

    SPECS = (
        Spec("poll1", REALM_1, "polling", (*POLLED, "vendors")),
        Spec("hook1", REALM_1, "webhook", None),
        Spec("hyb2", REALM_2, "hybrid", POLLED),
    )

    def instances(self) -> str:
        text = ""
        for spec in self.SPECS:
            if spec.name == "poll1" and not self.poll1_present:
                continue
            extra = ""
            if spec.vendor != "webhook":
                urls = (
                    [*POLLED, "vendors"] if spec.name == "poll1" and self.poll1_vendors else POLLED
                )
                extra = (
                    f'refresh_token = "{self.sandbox.realm_refresh_token(spec.realm)}"\n'
                    f"event.poller.refresh_interval = {self.interval[spec.name]}\n"
                    f"event.poller.urls = {orjson.dumps(list(urls)).decode()}\n"
                    f"event.poller.overlap = {self.overlap[spec.name]}\n"
                )
            text += instance_toml(
                spec.name, spec.realm, self.receiver_url, vendor=spec.vendor, extra=extra
            )
        return text

    def settings(self) -> str:
        schedule = ", ".join(str(s) for s in RETRY_SCHEDULE)
        return (
            self.sandbox.quickbooks_settings() + "[delivery]\n"
            f"timeout = {TIMEOUT}\n"
            f"retry_schedule = [{schedule}]\n"
            f"workers = {self.workers}\n"
            f"max_in_flight_per_endpoint = {self.in_flight}\n"
            "[outbox]\n"
            f'durability = "{self.durability}"\n'
            f"max_pending = {self.max_pending}\n"
        )

    def mutate(self, rng: random.Random) -> str:
        """One random config change; returns what it did."""
        what = rng.choice(
            ["interval", "overlap", "delivery", "durability", "poll1", "vendors", "max_pending"]
        )
        if what == "interval":
            name = rng.choice(["poll1", "hyb2"])
            self.interval[name] = rng.choice([0.01, 0.02, 0.04])
            return f"{name} refresh_interval {self.interval[name]}"
        if what == "overlap":
            name = rng.choice(["poll1", "hyb2"])
            self.overlap[name] = rng.choice([0, 2, 5, 30])
            return f"{name} overlap {self.overlap[name]}"
        if what == "delivery":
            self.workers, self.in_flight = rng.choice([2, 8, 64]), rng.choice([1, 4, 16])
            return f"workers {self.workers} max_in_flight {self.in_flight}"
        if what == "max_pending":
            # Small: a bad spell of the receiver fills it, and intake pushes back (503s, polls
            # that wait without moving their cursors).
            self.max_pending = 40 if self.max_pending > 40 else 1_000_000
            return f"max_pending {self.max_pending}"
        if what == "durability":
            self.durability = "normal" if self.durability == "full" else "full"
            return f"durability {self.durability}"
        if what == "vendors":
            self.poll1_vendors = not self.poll1_vendors
            return "poll1 vendors " + ("added" if self.poll1_vendors else "removed")
        self.poll1_present = not self.poll1_present
        return "poll1 " + ("back" if self.poll1_present else "removed")


@dataclass
class Result:
    seed: int
    kills: int = 0
    early_kills: int = 0  # before the daemon said it was ready
    kills_in_reload: int = 0  # within a second of a SIGHUP with a config change
    kills_in_stop: int = 0  # during a graceful stop (SIGTERM)
    graceful: int = 0  # SIGTERMs that finished before their kill came
    config_changes: list[str] = field(default_factory=list)
    changes: int = 0
    posts: int = 0
    posts_ok: int = 0
    deliveries: int = 0
    events_checked: int = 0
    ordered_objects: int = 0
    seq_ordered_objects: int = 0
    seqs: dict[str, int] = field(default_factory=dict, repr=False)  # outbox seq by eventId
    kill_point_items: int = 0
    duplicates: Duplicates = field(default_factory=Duplicates)
    answers: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        d = self.duplicates
        return "; ".join(
            [
                f"chaos seed {self.seed}: {self.kills} kills survived ({self.early_kills} before"
                f" ready, {self.kills_in_reload} after a reload, {self.kills_in_stop} during a"
                f" graceful stop), {self.graceful} graceful stops, {len(self.config_changes)}"
                " config changes",
                f"{self.changes} sandbox changes, {self.posts} webhook posts ({self.posts_ok}"
                " answered 200)",
                f"{self.deliveries} 2xx deliveries, {self.events_checked} events checked,"
                f" {self.ordered_objects} objects order-checked ({self.seq_ordered_objects}"
                f" also by outbox seq), {self.kill_point_items} kill-point checks",
                f"duplicates {d.total} (in flight at a kill {d.by_kill}, answered after the"
                f" sender had gone {d.late}, most at one kill {d.worst_kill}, worst ack lag"
                f" {d.worst_ack_lag:.2f} s)",
                f"receiver answers {self.answers}",
                f"wall {self.wall:.1f} s",
            ]
        )


def run(
    tmp: Path, *, seed: int, kills: int, say: Callable[[str], None] = print, lifetime: float = 2.5
) -> Result:
    """Run the scenario; `Result.problems` lists every broken promise (empty: all held)."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = Result(seed=seed)
    receiver = MoodyReceiver(rng.getrandbits(32)).start()
    d = DaemonProcess(tmp, "")
    webhook_format = rng.choice(["legacy", "cloudevents"])
    sandbox = SandboxProcess(
        tmp, realms=(REALM_1, REALM_2), webhook_url=d.webhook_url, webhook_format=webhook_format
    )
    layout = Layout(receiver.url, sandbox)
    changer = Changer(sandbox, rng.getrandbits(32))
    poster = Poster(d.webhook_url, rng.getrandbits(32))
    killed: list[tuple[float, float]] = []
    try:
        d.write_config(layout.instances(), settings=layout.settings())
        d.start()
        _wait_first_polls(d)
        baseline = len(sandbox.change_log())
        # Until its first cursor is seen, nothing of the added resource is owed.
        since: dict[tuple[str, str], float] = {("poll1", "Vendor"): math.inf}
        say(f"chaos seed {seed}: {kills} kills, sandbox webhooks {webhook_format}")
        changer.start()
        poster.start()
        sandbox.control("POST", "/_sandbox/generator", {"rate": 2})
        ready = True
        while result.kills < kills:
            # Mostly a life of up to `lifetime` s; now and then a kill within moments of start.
            early = rng.random() < 0.2
            life = rng.uniform(0.0, 0.6) if early else rng.uniform(0.2, lifetime)
            if not ready:
                life = rng.uniform(0.0, 1.0)
            if threading.Event().wait(life) or d.proc is None or d.proc.poll() is not None:
                raise AssertionError(f"daemon died by itself: {_tail(d)}")
            kill = _end_life(d, layout, rng, ready, result)
            if kill is not None:
                killed.append(kill)
            down = kill[1] if kill is not None else time.time()
            _check_kill_point(d, layout, sandbox, baseline, since, poster, down, result)
            last = result.kills == kills
            changes = [layout.mutate(rng)] if rng.random() < 0.35 else []
            if last and not layout.poll1_present:
                layout.poll1_present = True  # every instance is back for the final reckoning
                changes.append("poll1 back")
            if changes:
                result.config_changes += changes
                d.write_config(layout.instances(), settings=layout.settings())
            _sandbox_faults(sandbox, rng)
            d.start(wait=False)
            ready = last or rng.random() < 0.85
            if ready:
                d.wait_ready(60)
                sandbox.control("POST", "/_sandbox/webhooks/flush")
        sandbox.faults(slow=0, errors=0)
        _drain(d, sandbox, receiver, changer, poster)
        if not layout.poll1_vendors:
            since[("poll1", "Vendor")] = math.inf
        elif since[("poll1", "Vendor")] == math.inf:
            _wait_first_polls(d)  # the changes have stopped: nothing of vendors is owed
            since[("poll1", "Vendor")] = len(sandbox.change_log())
        _verdict(d, layout, sandbox, receiver, poster, baseline, since, killed, result)
        if d.stop() != 0:
            result.problems.append(f"daemon did not exit 0 on SIGTERM: {_tail(d)}")
    finally:
        changer.halt.set()
        poster.halt.set()
        changer.join(10)
        poster.join(10)
        d.close()
        sandbox.close()
        receiver.stop()
        result.wall = time.monotonic() - started
    return result


def _rows(db: Path) -> dict[str, int]:
    """Outbox rows by state (dead letters would break the order promise's premise)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    finally:
        conn.close()


def _tail(d: DaemonProcess, lines: int = 20) -> str:
    return "\n".join(d.stderr().splitlines()[-lines:])


def _end_life(
    d: DaemonProcess, layout: Layout, rng: random.Random, ready: bool, result: Result
) -> tuple[float, float] | None:
    """SIGKILL, sometimes during a reload with a config change or during a graceful stop.
    Returns (when the kill was sent, when the daemon was gone), or None if it stopped by itself
    first: then nothing may come twice on its account."""
    assert d.proc is not None
    how = rng.choices(["kill", "reload", "term"], [0.75, 0.15, 0.1])[0] if ready else "kill"
    if how == "reload":
        result.config_changes.append("reload: " + layout.mutate(rng))
        d.write_config(layout.instances(), settings=layout.settings())
        d.signal(signal.SIGHUP)
        threading.Event().wait(rng.uniform(0.0, 1.0))
    elif how == "term":
        d.signal(signal.SIGTERM)
        threading.Event().wait(rng.uniform(0.0, 0.6))
        if d.proc.poll() is not None:
            result.graceful += 1
            if d.proc.returncode != 0:
                result.problems.append(f"SIGTERM: exit {d.proc.returncode}: {_tail(d)}")
            return None
    sent = time.time()
    d.kill9()
    gone = time.time()
    # A graceful stop may finish between the look above and the kill.
    if d.proc.returncode != -9 and not (how == "term" and d.proc.returncode == 0):
        raise AssertionError(f"daemon exited {d.proc.returncode} before its kill: {_tail(d)}")
    result.kills += 1
    result.early_kills += not ready
    result.kills_in_reload += how == "reload"
    result.kills_in_stop += how == "term"
    return sent, gone


def _sandbox_faults(sandbox: SandboxProcess, rng: random.Random) -> None:
    """Slow answers stretch polls, so that kills land inside them; now and then a 503."""
    roll = rng.random()
    if roll < 0.25:
        sandbox.faults(slow=round(rng.uniform(0.05, 0.3), 3), errors=0)
    elif roll < 0.35:
        sandbox.faults(slow=0, errors=rng.choice([1, 2]), error_status=503)
    else:
        sandbox.faults(slow=0, errors=0)


def _wait_first_polls(d: DaemonProcess) -> None:
    def polled() -> bool:
        instances = d.health("/status")[1]["instances"]
        return all(
            loop["last_success_at"]
            for name in ("poll1", "hyb2")
            for loop in instances[name]["resources"].values()
        )

    wait_for(polled, 60, "a first poll of every resource")


def _check_kill_point(
    d: DaemonProcess,
    layout: Layout,
    sandbox: SandboxProcess,
    baseline: int,
    since: dict[tuple[str, str], float],
    poster: Poster,
    killed_at: float,
    result: Result,
) -> None:
    db = d.state_dir / OUTBOX
    if not db.exists():
        return
    acked = sandbox.stats()["webhooks"]["events_acked"]
    log = sandbox.change_log()
    result.seqs.update(pending_seqs(db))
    if ("poll1", "vendors") in read_outbox(db)[0] and since[("poll1", "Vendor")] == math.inf:
        since[("poll1", "Vendor")] = len(log)
    problems, checked = kill_point_problems(
        db, layout.SPECS, log, baseline, acked, poster.snapshot(), killed_at, since
    )
    result.kill_point_items += checked
    result.problems += [f"after kill {result.kills}: {p}" for p in problems]


def _drain(
    d: DaemonProcess,
    sandbox: SandboxProcess,
    receiver: MoodyReceiver,
    changer: Changer,
    poster: Poster,
) -> None:
    """Stop the load, calm the receiver, and wait until the sandbox's webhooks are all taken."""
    sandbox.control("POST", "/_sandbox/generator", {"rate": 0})
    changer.halt.set()
    poster.halt.set()
    changer.join(10)
    poster.join(10)
    for thread in (changer, poster):
        if thread.error is not None:
            raise AssertionError(f"{thread.name} failed: {thread.error!r}")
    receiver.calm = True
    notifications = sum(
        1 for c in sandbox.change_log() if c["webhook"]
        and not (c["operation"] == "Merge" and c["event_type"] == "DELETED")
    )  # fmt: skip

    def taken() -> bool:
        stats = sandbox.control("POST", "/_sandbox/webhooks/flush")
        return bool(stats["events_acked"] == notifications)

    wait_for(taken, 90, f"the sandbox's {notifications} webhooks to be acknowledged")


def _verdict(
    d: DaemonProcess,
    layout: Layout,
    sandbox: SandboxProcess,
    receiver: MoodyReceiver,
    poster: Poster,
    baseline: int,
    since: dict[tuple[str, str], float],
    killed: list[tuple[float, float]],
    result: Result,
) -> None:
    full_log = sandbox.change_log()
    log = [c for c in full_log if c["seq"] > baseline]
    posts = poster.snapshot()
    wants: dict[str, Want] = {s.name: want(s, log, posts, since) for s in layout.SPECS}
    try:
        wait_for(lambda: not missing(wants, receiver.snapshot()), 120, "every owed event")
    except AssertionError as exc:
        gaps = missing(wants, receiver.snapshot())
        result.problems += [f"{exc}: {name} never got {sorted(keys)[:10]} ({len(keys)})"
                            for name, keys in gaps.items()]  # fmt: skip
    # Then the rest (posts that got no answer yet were stored) and no dead letter.
    db = d.state_dir / OUTBOX
    try:
        wait_for(lambda: _rows(db) == {}, 60, "an empty outbox")
    except AssertionError as exc:
        result.problems.append(f"{exc}: rows by state {_rows(db)}")
    deliveries = receiver.snapshot()
    result.problems += [
        f"delivered but never made or posted: {p}" for p in invented(wants, deliveries)
    ]
    result.duplicates = duplicates(deliveries, killed)
    result.problems += [
        f"duplicate not in flight at a kill: {p}" for p in result.duplicates.unjustified
    ]
    result.problems += [f"order: {p}" for p in order_violations(wants, deliveries)]
    by_seq, result.seq_ordered_objects = seq_order_violations(deliveries, result.seqs)
    result.problems += [f"order: {p}" for p in by_seq]
    if receiver.bad_signatures:
        result.problems.append(f"{receiver.bad_signatures} deliveries with a bad signature")
    # The final cursors too, once the backlog is gone (the daemon is still up: WAL reads are fine).
    acked = sandbox.stats()["webhooks"]["events_acked"]
    problems, checked = kill_point_problems(
        db, layout.SPECS, full_log, baseline, acked, posts, time.time(), since
    )
    result.kill_point_items += checked
    result.problems += [f"at the end: {p}" for p in problems]
    result.changes = len(log)
    result.posts = len(posts)
    result.posts_ok = sum(p.status == 200 for p in posts)
    result.deliveries = len(deliveries)
    result.events_checked = sum(len(w.expected) for w in wants.values())
    result.ordered_objects = ordered_objects(wants, deliveries)
    result.answers = dict(receiver.answers)
