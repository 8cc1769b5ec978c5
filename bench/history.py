"""What delivery history costs: intake while delivering, end-to-end events/s, and the database
size per 1,000,000 delivered events, with `outbox.history_days = 7` against `0` in one run.

    python bench/history.py [--quick] [--repeats 5] [--only intake,e2e,size] [--prefill N]
                            [--size-events N]

(a) intake with deliveries on: two daemons (durability "full", one with history, one without)
    and one receiver answering 200 at once; the one with history starts with `--prefill`
    (1,000,000) delivered events already in it, as after a busy week. Per repeat, each daemon
    in turn (the order alternates) takes signed single-entity webhook POSTs from 64 connections
    back to back for `--duration` seconds while its senders deliver them, and so move every
    delivered row into `history`; then the benchmark waits for the backlog. Median events/s
    over repeats, and the ratio 7/0. Target: ratio >= 0.9 (exit status 1 when missed).
(b) end to end: `e2e.py`'s throughput part (open loop, 10-entity bodies, the receiver verifies
    every delivery), a fresh daemon each time, alternating settings; events/s from the first
    POST to the last receipt, median over repeats, and the ratio 7/0.
(c) size: one daemon with history delivers `--size-events` events (500-entity bodies); then,
    with the daemon stopped, the database's used bytes ((page_count - freelist_count) x
    page_size) less an empty outbox's, per event and scaled to 1,000,000, with the tables'
    shares (SQLite's dbstat). Then the clock moves past history_days and `Outbox.prune_history`
    deletes it all, in process, while stall.py's monitor watches the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson
import uvloop
from _common import (
    Daemon,
    Procs,
    cpu_seconds,
    machine,
    median,
    run_loadgen,
    start_receiver,
    table,
    wait_for,
    workdir,
)
from e2e import throughput
from qbo_events.app import OUTBOX_FILE
from qbo_events.events import Change, Event, EventType, Source
from qbo_events.outbox import Outbox
from stall import Lag

TARGET_RATIO = 0.9
SETTINGS = (7, 0)  # history_days: with history, without
DRAIN_LIMIT = 120.0
MIB = 2**20


def history_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM history").fetchone()[0])


def prefill(path: Path, rows: int) -> float:
    """`rows` delivered events of the last six days in history (one attempt each), in the
    daemon's schema, before the daemon starts; returns the seconds it took. Negative seqs, so
    the daemon's own rows never replace them; event ids in hash order, as real ones are."""
    began = time.monotonic()
    empty_outbox(path)
    encode = msgspec.msgpack.Encoder().encode
    now = time.time()
    pad = "x" * 300  # a delivered body is the event's JSON envelope: several hundred bytes

    def row(n: int) -> tuple[Any, ...]:
        object_id = f"pre-{n}"
        change = Change(
            realm_id="4620816365000000001",
            entity="Invoice",
            object_id=object_id,
            event_type=EventType.CREATED,
            date="2026-01-01T00:00:00Z",
            source=Source.WEBHOOK,
            raw={"name": "Invoice", "id": object_id, "operation": "Create"},
        )
        event_id = hashlib.blake2b(n.to_bytes(8), digest_size=16).hexdigest()
        event = Event(event_id=event_id, instance="bench", object_type="invoices", change=change)
        at = now - 6 * 86400 * (rows - n) / rows
        body = orjson.dumps({"eventId": event_id, "objectId": object_id, "pad": pad})
        return -n - 1, event_id, "bench", event.object_key, encode(event), body, at, at

    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO history (seq, event_id, instance, object_key, event, body,"
            " accepted_at, delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row(n) for n in range(rows)),
        )
        conn.execute(
            "INSERT INTO attempts (seq, at, endpoint, status, latency_ms)"
            " SELECT seq, delivered_at, 'http://127.0.0.1/hook', 200, 1.0 FROM history"
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.monotonic() - began


# -- (a) intake with deliveries on -------------------------------------------------------------


def intake(a: argparse.Namespace) -> dict[int, list[dict[str, Any]]]:
    results: dict[int, list[dict[str, Any]]] = {days: [] for days in SETTINGS}
    with workdir(a.keep) as tmp, Procs() as procs:
        _, callback, _ = start_receiver(procs, tmp, verify=False)
        daemons = {}
        for days in SETTINGS:
            sub = tmp / f"days{days}"
            sub.mkdir()
            if days and a.prefill:
                print(
                    f"  history_days {days}: {a.prefill} delivered events already in history",
                    end="",
                )
                seconds = prefill(sub / "state" / OUTBOX_FILE, a.prefill)
                print(f" (written in {seconds:.0f} s)", flush=True)
            daemons[days] = Daemon(
                procs, sub, callback, log_level="warning", outbox={"history_days": str(days)}
            )
        for days, daemon in daemons.items():
            daemon.wait_ready()
            print(f"  history_days {days}: daemon pid {daemon.pid}", flush=True)

        def drain(daemon: Daemon) -> float:
            began = time.monotonic()
            wait_for(
                lambda: daemon.outbox()["undelivered"] == 0,
                DRAIN_LIMIT,
                "the daemon to deliver its backlog",
                interval=0.2,
            )
            return time.monotonic() - began

        # Warm both up (imports, connection pools, SQLite pages); not counted.
        for days, daemon in daemons.items():
            run_loadgen(procs, tmp, daemon.url, prefix=f"warm{days}-", duration=1.0, concurrency=8)
            drain(daemon)

        for r in range(a.repeats):
            for days in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
                daemon = daemons[days]
                cpu0 = cpu_seconds(daemon.pid)
                report = run_loadgen(
                    procs,
                    tmp,
                    daemon.url,
                    prefix=f"r{r}d{days}-",
                    duration=a.duration,
                    concurrency=a.concurrency,
                    warmup=0.5,
                )
                report["drain_s"] = drain(daemon)
                # Intake runs ahead of delivery when the senders fall behind: every event from
                # its round's first POST to the end of its backlog is the pace that lasts.
                report["sustained"] = int(report["ok_total"]) / (
                    float(report["finished"]) - float(report["start"]) + report["drain_s"]
                )
                # Intake and the delivery (and history) of those events, per event taken in.
                report["cpu_us"] = (
                    1e6 * (cpu_seconds(daemon.pid) - cpu0) / max(1, int(report["ok_total"]))
                )
                results[days].append(report)
                print(
                    f"  repeat {r + 1} history_days {days}: {report['req_per_s']:6.0f} events/s"
                    f"  p50 {report['p50_ms']:6.2f} ms  p99 {report['p99_ms']:6.2f} ms"
                    f"  statuses {report['statuses']} errors {report['errors']}"
                    f"  backlog {report['drain_s']:.1f} s  cpu {report['cpu_us']:.0f} us/event",
                    flush=True,
                )
        kept = {days: history_rows(d.outbox_path) for days, d in daemons.items()}
    # The setting took effect: every delivered event is in history with 7 days, none with 0.
    delivered = sum(int(r["ok_total"]) for r in results[7]) + a.prefill
    if kept[0] != 0 or kept[7] < delivered:
        raise RuntimeError(f"history rows {kept} do not match the settings ({delivered} sent)")
    print(f"  history rows at the end: {kept[7]} with history_days 7, {kept[0]} with 0")
    return results


# -- (b) end to end ----------------------------------------------------------------------------


def end_to_end(a: argparse.Namespace) -> dict[int, list[dict[str, Any]]]:
    results: dict[int, list[dict[str, Any]]] = {days: [] for days in SETTINGS}
    for r in range(a.repeats):
        for days in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            args = argparse.Namespace(
                tp_rate=a.tp_rate,
                per_body=10,
                tp_seconds=a.tp_seconds,
                delivery={},
                outbox={"history_days": str(days)},
            )
            with workdir(a.keep) as tmp:
                tp = throughput(args, tmp)
            results[days].append(tp)
            print(
                f"  repeat {r + 1} history_days {days}: {tp['overall_per_s']:6.0f} events/s"
                f" first POST -> last receipt, {tp['window_per_s']:.0f}/s while offering;"
                f" {tp['received']} of {tp['accepted']} received,"
                f" {tp['bad_signatures']} bad signatures",
                flush=True,
            )
    return results


# -- (c) size and pruning ----------------------------------------------------------------------


def used_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """Bytes in use (not on the freelist), and the bytes of each table with its indexes."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        shares: dict[str, int] = {}
        for name, table_name, size in conn.execute(
            "SELECT d.name, coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d"
            " LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY d.name"
        ):
            del name
            shares[table_name] = shares.get(table_name, 0) + int(size)
    return (pages - free) * page_size, shares


def empty_outbox(path: Path) -> int:
    async def create() -> None:
        async with Outbox(path):
            pass

    asyncio.run(create())
    return used_bytes(path)[0]


def prune(path: Path) -> dict[str, Any]:
    """Prune everything as the daemon would 8 days later, timing it and the loop's stalls."""

    async def run() -> dict[str, Any]:
        later = time.time() + 8 * 86400
        outbox = Outbox(path, history_days=7, clock=lambda: later)
        lag = Lag()
        stop = asyncio.Event()
        async with outbox, asyncio.TaskGroup() as group:
            group.create_task(lag.run(stop))
            await lag.settle()
            lag.reset()
            began = time.monotonic()
            cpu0 = time.process_time()
            rows = await outbox.prune_history()
            seconds = time.monotonic() - began
            cpu = time.process_time() - cpu0
            await lag.settle()
            stop.set()
        return {
            "rows": rows,
            "seconds": seconds,
            "cpu_s": cpu,
            "worst_stall_ms": 1000 * lag.worst,
            "own_stall_ms": 1000 * lag.own,
        }

    return uvloop.run(run())


def size(a: argparse.Namespace) -> dict[str, Any]:
    with workdir(a.keep) as tmp, Procs() as procs:
        empty = empty_outbox(tmp / "empty.sqlite3")
        _, callback, _ = start_receiver(procs, tmp, verify=False)
        daemon = Daemon(procs, tmp, callback, log_level="warning", outbox={"history_days": "7"})
        daemon.wait_ready()
        print(f"  daemon pid {daemon.pid}: {a.size_events} events as 500-entity bodies", flush=True)
        began = time.monotonic()
        report = run_loadgen(
            procs,
            tmp,
            daemon.url,
            prefix="size-",
            duration=600,
            concurrency=4,
            per_body=500,
            bodies=-(-a.size_events // 500),
            timeout=660,
        )
        accepted = int(report["ok_total"]) * 500
        wait_for(
            lambda: daemon.delivered() >= accepted and daemon.outbox()["undelivered"] == 0,
            600,
            f"{accepted} deliveries",
            interval=0.5,
        )
        seconds = time.monotonic() - began
        code = daemon.proc.stop()
        if code != 0:
            raise RuntimeError(f"the daemon exited {code}: {daemon.proc.tail()}")
        path = daemon.outbox_path
        kept = history_rows(path)
        used, shares = used_bytes(path)
        file_bytes = path.stat().st_size
        print(f"  delivered {accepted} in {seconds:.1f} s; pruning them", flush=True)
        pruned = prune(path)
        after, after_shares = used_bytes(path)
        after_file = path.stat().st_size
    return {
        "events": accepted,
        "history_rows": kept,
        "seconds": seconds,
        "empty": empty,
        "used": used,
        "file": file_bytes,
        "shares": shares,
        "prune": pruned,
        "after": after,
        "after_shares": after_shares,
        "after_file": after_file,
    }


# -- the report --------------------------------------------------------------------------------


def ratio_rows(
    results: dict[int, list[dict[str, Any]]], key: str, extra: list[tuple[str, str]]
) -> tuple[list[list[Any]], float]:
    med = {days: median([float(r[key]) for r in rs]) for days, rs in results.items()}
    rows = []
    for days in SETTINGS:
        rs = results[days]
        row = [
            f"history_days = {days}",
            f"{med[days]:.0f}",
            " / ".join(f"{float(r[key]):.0f}" for r in rs),
        ]
        row += [f"{median([float(r[k]) for r in rs]):{fmt}}" for k, fmt in extra]
        rows.append(row)
    return rows, med[7] / med[0] if med[0] else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, shorter, 20,000 events")
    parser.add_argument("--only", default="intake,e2e,size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="(a) seconds per repeat")
    parser.add_argument("--concurrency", type=int, default=64, help="(a) connections")
    parser.add_argument(
        "--prefill",
        type=int,
        default=1_000_000,
        help="(a) delivered events already in history when the daemon with history starts",
    )
    parser.add_argument("--tp-rate", type=float, default=4000.0, help="(b) offered events/s")
    parser.add_argument("--tp-seconds", type=float, default=8.0, help="(b) seconds offered")
    parser.add_argument("--size-events", type=int, default=100_000, help="(c) events delivered")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    a = parser.parse_args()
    if a.quick:
        a.repeats, a.duration, a.tp_seconds, a.size_events = 2, 2.0, 4.0, 20_000
        a.prefill = min(a.prefill, 50_000)
    parts = {p.strip() for p in a.only.split(",") if p.strip()}

    print(f"history benchmark: {machine()}")
    print(
        f"  {a.repeats} repeats per setting, alternating history_days 7 and 0; durability"
        " 'full', default delivery settings; daemon, receiver and load generator share the CPUs"
    )
    met = True
    if "intake" in parts:
        print("(a) intake with deliveries on")
        if a.prefill:
            print(f"    the daemon with history starts with {a.prefill} events in it")
        results = intake(a)
        rows, ratio = ratio_rows(
            results,
            "req_per_s",
            [("p99_ms", ".1f"), ("drain_s", ".1f"), ("sustained", ".0f"), ("cpu_us", ".0f")],
        )
        met = ratio >= TARGET_RATIO
        print()
        print(
            table(
                [
                    "(a) intake, deliveries on",
                    "median events/s",
                    "repeats",
                    "p99 ms",
                    "backlog s",
                    "incl. backlog /s",
                    "CPU us/event",
                ],
                rows,
            )
        )
        verdict = "MET" if met else "MISSED"
        print(f"    ratio 7/0 = {ratio:.2f}   (target >= {TARGET_RATIO}: {verdict})")
        pairs = [
            float(h["req_per_s"]) / float(n["req_per_s"])
            for h, n in zip(results[7], results[0], strict=True)
        ]
        print(
            "    ratio 7/0 within each repeat (the two runs side by side): "
            + " / ".join(f"{r:.2f}" for r in pairs)
            + f", median {median(pairs):.2f}"
        )
        lasting = {
            days: median([float(r["sustained"]) for r in rs]) for days, rs in results.items()
        }
        print(f"    ratio 7/0 of events/s including the backlog: {lasting[7] / lasting[0]:.2f}")
        cpu = {days: median([float(r["cpu_us"]) for r in rs]) for days, rs in results.items()}
        print(
            f"    daemon CPU per event: {cpu[7]:.0f} us with history, {cpu[0]:.0f} us without:"
            f" history costs {cpu[7] - cpu[0]:.0f} us ({cpu[7] / cpu[0] - 1:.0%}) per event,"
            " a steadier figure than events/s when other work shares the cores"
        )
        print(
            "    backlog s: left to deliver after the load stopped; incl. backlog: events from"
            " the first POST until the backlog was delivered; CPU us/event: the daemon's,"
            " intake and delivery (and history) of each event"
        )
    if "e2e" in parts:
        print(f"(b) end to end, {a.tp_rate:.0f} events/s offered for {a.tp_seconds:g} s")
        rows, ratio = ratio_rows(end_to_end(a), "overall_per_s", [("window_per_s", ".0f")])
        print()
        print(
            table(
                [
                    "(b) end to end",
                    "median events/s",
                    "repeats",
                    "receipts/s while offering",
                ],
                rows,
            )
        )
        print(f"    ratio 7/0 = {ratio:.2f}   (events/s: first POST -> last verified receipt)")
    if "size" in parts:
        print("(c) database size with history, and pruning it")
        s = size(a)
        grown = s["used"] - s["empty"]
        per_event = grown / s["events"]
        p = s["prune"]
        print()
        print(
            table(
                ["(c) size", "value"],
                [
                    ["events delivered (history rows)", f"{s['events']} ({s['history_rows']})"],
                    ["delivered in, s", f"{s['seconds']:.1f}"],
                    ["used bytes, empty outbox", f"{s['empty']}"],
                    ["used bytes after delivery", f"{s['used']} ({s['used'] / MIB:.1f} MiB)"],
                    ["file size on disk", f"{s['file'] / MIB:.1f} MiB"],
                    ["bytes per delivered event", f"{per_event:.0f}"],
                    ["per 1,000,000 delivered events", f"{per_event * 1e6 / 2**30:.2f} GiB"],
                    *(
                        [f"  of which {name} (+ indexes), bytes/event", f"{b / s['events']:.0f}"]
                        for name, b in sorted(s["shares"].items(), key=lambda kv: -kv[1])
                        if b / s["events"] >= 1
                    ),
                    ["prune: rows deleted (history + attempts)", f"{p['rows']}"],
                    ["prune: seconds", f"{p['seconds']:.2f}"],
                    ["prune: rows/s", f"{p['rows'] / p['seconds']:.0f}"],
                    ["prune: CPU s (this process)", f"{p['cpu_s']:.2f}"],
                    ["prune: worst loop stall / own, ms", _stalls(p)],
                    ["used bytes after the prune", f"{s['after']} ({s['after'] / MIB:.1f} MiB)"],
                    ["file size after the prune", f"{s['after_file'] / MIB:.1f} MiB"],
                ],
            )
        )
        print(
            "    the file keeps its pages after a prune (on the freelist, reused by new rows);"
            " dedupe holds every event id for the dedupe window, history or not"
        )
    return 0 if met else 1


def _stalls(p: dict[str, Any]) -> str:
    return f"{p['worst_stall_ms']:.1f} / {p['own_stall_ms']:.1f}"


if __name__ == "__main__":
    sys.exit(main())
