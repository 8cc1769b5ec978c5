"""End to end: webhook POST into the daemon -> signed delivery verified at a local receiver.

    python bench/e2e.py [--quick] [--only throughput,latency,memory]

(a) throughput: an open-loop offered rate (default 2,500 events/s as 10-entity bodies, 10 s);
    events/s from the first POST to the verified receipt at the receiver. The receiver verifies
    every delivery with the standardwebhooks library and shares the machine's CPUs with the
    daemon and the load generator. Target >= 2,000 events/s sustained.
(b) latency: a fixed offered rate of 500 single-entity POSTs/s, open loop (20 s); per event,
    from the start of its POST to its receipt. Target p99 < 50 ms.
(c) memory: the daemon's RSS with 100,000 undelivered events in the outbox (the callback port
    has no listener, so every attempt fails and the events stay). Target < 150 MB.

Each part starts its own daemon (durability "full", one webhook instance, default delivery
settings), receiver and load generator, each in its own process, all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    Daemon,
    Procs,
    cpu_seconds,
    delivery_settings,
    free_port,
    http_json,
    machine,
    percentile,
    proc_status,
    run_loadgen,
    start_receiver,
    table,
    wait_for,
    workdir,
)

THROUGHPUT_TARGET = 2000.0
LATENCY_P99_TARGET_MS = 50.0
RSS_TARGET_MB = 150.0


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def wait_received(base: str, count: int, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        stats = http_json(f"{base}/stats")[1]
        return stats if stats["count"] >= count else None

    try:
        return dict(wait_for(done, timeout, f"{count} deliveries", interval=0.2))
    except TimeoutError:
        return dict(http_json(f"{base}/stats")[1])


def throughput(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with Procs() as procs:
        receiver, callback, base = start_receiver(procs, tmp, verify=True)
        daemon = Daemon(
            procs, tmp, callback, log_level="warning", delivery=a.delivery, outbox=a.outbox
        )
        daemon.wait_ready()
        print(f"  daemon pid {daemon.pid}", flush=True)
        # Warm-up, not counted.
        run_loadgen(procs, tmp, daemon.url, prefix="warm-", duration=1.0, rate=100, per_body=10)
        wait_received(base, 1000, 30)
        before = http_json(f"{base}/stats")[1]["count"]
        cpu0 = {"daemon": cpu_seconds(daemon.pid), "receiver": cpu_seconds(receiver.pid)}
        report = run_loadgen(
            procs,
            tmp,
            daemon.url,
            prefix="tp-",
            duration=a.tp_seconds,
            rate=a.tp_rate / a.per_body,
            per_body=a.per_body,
            concurrency=64,
        )
        accepted = int(report["ok_total"]) * a.per_body
        stats = wait_received(base, before + accepted, 90)
        cpu = {
            "daemon": cpu_seconds(daemon.pid) - cpu0["daemon"],
            "receiver": cpu_seconds(receiver.pid) - cpu0["receiver"],
        }
        arrivals = http_json(f"{base}/arrivals", timeout=30)[1]
    times = sorted(t for object_id, t in arrivals.items() if object_id.startswith("tp-"))
    start, end = float(report["start"]), float(report["finished"])
    received = len(times)
    last = times[-1] if times else start
    in_window = sum(1 for t in times if start + 1.0 <= t <= end)
    return {
        "offered_per_s": a.tp_rate,
        "per_body": a.per_body,
        "seconds": a.tp_seconds,
        "accepted": accepted,
        "post_statuses": report["statuses"],
        "received": received,
        "bad_signatures": stats["bad_signatures"],
        "overall_per_s": received / (last - start) if last > start else 0.0,
        "window_per_s": in_window / (end - start - 1.0),
        "tail_s": last - end,
        "cpu": cpu,
    }


def latency(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with Procs() as procs:
        _, callback, base = start_receiver(procs, tmp, verify=True)
        daemon = Daemon(
            procs, tmp, callback, log_level="warning", delivery=a.delivery, outbox=a.outbox
        )
        daemon.wait_ready()
        print(f"  daemon pid {daemon.pid}", flush=True)
        run_loadgen(procs, tmp, daemon.url, prefix="warm-", duration=1.0, rate=200)
        wait_received(base, 200, 30)
        report = run_loadgen(
            procs,
            tmp,
            daemon.url,
            prefix="lat-",
            duration=a.lat_seconds,
            rate=a.lat_rate,
            concurrency=256,
            record=True,
        )
        sends: dict[str, float] = report["sends"]
        stats = wait_received(base, len(sends) + 200, 60)
        arrivals = http_json(f"{base}/arrivals", timeout=30)[1]
    skip_until = float(report["start"]) + 1.0  # the first second is warm-up
    latencies = [
        (arrivals[object_id] - sent) * 1000
        for object_id, sent in sends.items()
        if sent >= skip_until and object_id in arrivals
    ]
    missing = sum(1 for object_id in sends if object_id not in arrivals)
    return {
        "rate": a.lat_rate,
        "seconds": a.lat_seconds,
        "events": len(latencies),
        "missing": missing,
        "bad_signatures": stats["bad_signatures"],
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "ack_p50_ms": report["p50_ms"],
        "ack_p99_ms": report["p99_ms"],
        "schedule_lag_p99_ms": report["schedule_lag_p99_ms"],
    }


def memory(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    dead_port = free_port()  # nothing listens here: every delivery attempt is refused
    with Procs() as procs:
        daemon = Daemon(
            procs,
            tmp,
            f"http://127.0.0.1:{dead_port}/hook",
            log_level="warning",
            delivery=a.delivery,
            outbox=a.outbox,
        )
        daemon.wait_ready()
        print(f"  daemon pid {daemon.pid}", flush=True)
        idle_kb = proc_status(daemon.pid)["VmRSS"]
        bodies = -(-a.mem_events // a.mem_per_body)
        began = time.monotonic()
        report = run_loadgen(
            procs,
            tmp,
            daemon.url,
            prefix="mem-",
            duration=120,
            concurrency=4,
            per_body=a.mem_per_body,
            bodies=bodies,
            timeout=150,
        )
        wait_for(
            lambda: daemon.outbox()["undelivered"] >= a.mem_events,
            30,
            f"{a.mem_events} undelivered events",
            interval=0.5,
        )
        intake_s = time.monotonic() - began
        loaded = proc_status(daemon.pid)
        samples = [loaded["VmRSS"]]
        settle_end = time.monotonic() + a.mem_settle
        while time.monotonic() < settle_end:
            time.sleep(1.0)
            samples.append(proc_status(daemon.pid)["VmRSS"])
        after = proc_status(daemon.pid)
        status = daemon.health("/status")[1]
    return {
        "events": status["outbox"]["undelivered"],
        "per_body": a.mem_per_body,
        "post_statuses": report["statuses"],
        "intake_s": intake_s,
        "idle_mb": idle_kb / 1024,
        "loaded_mb": loaded["VmRSS"] / 1024,
        "after_mb": after["VmRSS"] / 1024,
        "max_sampled_mb": max(samples) / 1024,
        "hwm_mb": after["VmHWM"] / 1024,
        "settle_s": a.mem_settle,
        "failed_attempts": status["deliveries"]["failed_attempts"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, 30,000 events for (c)")
    parser.add_argument("--only", default="throughput,latency,memory")
    parser.add_argument("--tp-rate", type=float, default=2500.0, help="(a) offered events/s")
    parser.add_argument("--per-body", type=int, default=10, help="(a) entities per POST")
    parser.add_argument("--tp-seconds", type=float, default=10.0)
    parser.add_argument("--lat-rate", type=float, default=500.0, help="(b) events/s")
    parser.add_argument("--lat-seconds", type=float, default=20.0)
    parser.add_argument("--mem-events", type=int, default=100_000)
    parser.add_argument("--mem-per-body", type=int, default=500)
    parser.add_argument("--mem-settle", type=float, default=30.0, help="(c) seconds to watch")
    parser.add_argument(
        "--delivery", action="append", default=[], metavar="KEY=VALUE", help="[delivery] keys"
    )
    parser.add_argument(
        "--outbox", action="append", default=[], metavar="KEY=VALUE", help="[outbox] keys"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    a = parser.parse_args()
    if a.quick:
        a.tp_seconds, a.lat_seconds, a.mem_events, a.mem_settle = 4.0, 6.0, 30_000, 10.0
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    a.delivery = delivery_settings(a.delivery)
    a.outbox = delivery_settings(a.outbox, "--outbox")

    print(f"end-to-end benchmark: {machine()}")
    print("  one daemon (durability 'full', default delivery settings), one receiver and one")
    print("  load generator, each its own process, sharing the CPUs")
    if a.delivery:
        print(f"  delivery settings: {a.delivery}")
    if a.outbox:
        print(f"  outbox settings: {a.outbox}")
    failed = False
    if "throughput" in parts:
        with workdir(a.keep) as tmp:
            tp = throughput(a, tmp)
        ok = tp["window_per_s"] >= THROUGHPUT_TARGET and tp["received"] >= tp["accepted"]
        failed |= not ok
        print()
        print(
            f"(a) sustained throughput: offered {tp['offered_per_s']:.0f} events/s for"
            f" {tp['seconds']:g} s as {tp['per_body']}-entity bodies; the receiver verifies"
            " every delivery (standardwebhooks) on the same CPUs"
        )
        print(
            table(
                ["figure", "value"],
                [
                    ["events accepted (200)", tp["accepted"]],
                    ["events received + verified", tp["received"]],
                    ["bad signatures", tp["bad_signatures"]],
                    ["sustained: receipts/s while offering", f"{tp['window_per_s']:.0f}"],
                    ["first POST -> last receipt, events/s", f"{tp['overall_per_s']:.0f}"],
                    ["backlog tail after the last POST, s", f"{tp['tail_s']:.2f}"],
                    ["daemon CPU s / 1k events", _per_k(tp["cpu"]["daemon"], tp["received"])],
                    ["receiver CPU s / 1k events", _per_k(tp["cpu"]["receiver"], tp["received"])],
                ],
            )
        )
        print(f"    target >= {THROUGHPUT_TARGET:.0f} events/s: {verdict(ok)}")
    if "latency" in parts:
        with workdir(a.keep) as tmp:
            lat = latency(a, tmp)
        ok = lat["p99_ms"] < LATENCY_P99_TARGET_MS and not lat["missing"]
        failed |= not ok
        print()
        print(
            f"(b) latency POST -> verified receipt at {lat['rate']:.0f} events/s offered"
            f" (open loop, single-entity POSTs, {lat['seconds']:g} s, first second excluded)"
        )
        print(
            table(
                ["figure", "value"],
                [
                    ["events measured", lat["events"]],
                    ["never received", lat["missing"]],
                    ["p50 ms", f"{lat['p50_ms']:.1f}"],
                    ["p90 ms", f"{lat['p90_ms']:.1f}"],
                    ["p99 ms", f"{lat['p99_ms']:.1f}"],
                    ["max ms", f"{lat['max_ms']:.1f}"],
                    [
                        "webhook 200 p50 / p99 ms",
                        f"{lat['ack_p50_ms']:.1f} / {lat['ack_p99_ms']:.1f}",
                    ],
                    ["load generator schedule lag p99 ms", f"{lat['schedule_lag_p99_ms']:.1f}"],
                ],
            )
        )
        print(f"    target p99 < {LATENCY_P99_TARGET_MS:.0f} ms: {verdict(ok)}")
    if "memory" in parts:
        with workdir(a.keep) as tmp:
            mem = memory(a, tmp)
        ok = max(mem["after_mb"], mem["max_sampled_mb"]) < RSS_TARGET_MB
        failed |= not ok
        print()
        print(
            f"(c) daemon RSS with {mem['events']} undelivered events (receiver down;"
            f" pushed as {mem['per_body']}-entity bodies in {mem['intake_s']:.1f} s)"
        )
        print(
            table(
                ["figure", "MB"],
                [
                    ["VmRSS idle, before intake", f"{mem['idle_mb']:.1f}"],
                    ["VmRSS when all are in the outbox", f"{mem['loaded_mb']:.1f}"],
                    [f"VmRSS {mem['settle_s']:g} s later", f"{mem['after_mb']:.1f}"],
                    ["VmRSS max sampled (1 s)", f"{mem['max_sampled_mb']:.1f}"],
                    ["VmHWM (peak)", f"{mem['hwm_mb']:.1f}"],
                ],
            )
        )
        print(f"    failed delivery attempts meanwhile: {mem['failed_attempts']}")
        print(f"    target < {RSS_TARGET_MB:.0f} MB: {verdict(ok)}")
    return 1 if failed else 0


def _per_k(seconds: float, events: int) -> str:
    return f"{1000 * seconds / events:.3f}" if events else "n/a"


if __name__ == "__main__":
    sys.exit(main())
