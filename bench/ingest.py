"""Webhook intake: signed single-entity legacy webhook POSTs per second into the real daemon,
against a bare aiohttp server that only reads the body and answers 200.

Same load generator (its own process, N connections back to back, every POST a distinct entity
id so nothing is deduplicated), same run, same machine, rounds alternating between the targets.
The daemon runs with durability "full"; each 200 means the event is verified, normalized and
fsynced in the outbox. Its one instance's callback endpoint accepts connections and never
answers, so the events stay stored and no delivery shares the CPU with the intake. `--deliver`
points the callback at a receiver answering 200 at once instead: the daemon then also delivers
every event during the rounds, and the benchmark waits for the backlog after each daemon round.

    python bench/ingest.py [--quick] [--deliver] [--rounds 3] [--duration 5] [--concurrency 64]

Target: median daemon req/s >= 0.6 x median bare req/s.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from _common import (
    Daemon,
    Procs,
    cpu_seconds,
    delivery_settings,
    machine,
    median,
    run_loadgen,
    start_bare,
    start_receiver,
    table,
    wait_for,
    workdir,
)

TARGET_RATIO = 0.6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--durability", default="full", choices=["full", "normal"])
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="the callback answers 200 at once, so the daemon also delivers every event it"
        " takes in, on the same cores (by default the callback hangs and none leaves)",
    )
    parser.add_argument(
        "--delivery", action="append", default=[], metavar="KEY=VALUE", help="[delivery] keys"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    a = parser.parse_args()
    if a.quick:
        a.rounds, a.duration = 2, 2.0
    drain_limit = 60.0
    delivery = delivery_settings(a.delivery)

    print(f"ingest benchmark: {machine()}")
    print(
        f"  {a.rounds} rounds x {a.duration:g} s per target, {a.concurrency} connections,"
        f" single-entity signed legacy bodies, daemon durability {a.durability!r}"
    )
    if a.deliver:
        print("  WITH DELIVERY: the daemon also delivers every event it takes in")
    else:
        print("  intake: the callback endpoint hangs; events are stored, none is delivered")
        delivery = {"max_in_flight_per_endpoint": "1", "timeout": "3600", **delivery}
    if delivery:
        print(f"  delivery settings: {delivery}")
    results: dict[str, list[dict[str, object]]] = {"daemon": [], "bare": []}
    with workdir(a.keep) as tmp, Procs() as procs, socket.socket() as hole:
        if not a.deliver:
            # Accepts (the kernel's backlog) and never answers: the one request hangs.
            hole.bind(("127.0.0.1", 0))
            hole.listen(8)
            callback = f"http://127.0.0.1:{hole.getsockname()[1]}/hook"
        else:
            _, callback, _ = start_receiver(procs, tmp, verify=False)
        daemon = Daemon(
            procs,
            tmp,
            callback,
            durability=a.durability,
            log_level="warning",
            delivery=delivery,
        )
        bare, bare_url = start_bare(procs, tmp)
        daemon.wait_ready()
        print(f"  daemon pid {daemon.pid}, bare server pid {bare.pid}", flush=True)
        urls = {"daemon": daemon.url, "bare": bare_url}
        pids = {"daemon": daemon.pid, "bare": bare.pid}

        def drain() -> float:
            if not a.deliver:
                return 0.0
            began = time.monotonic()
            wait_for(
                lambda: daemon.outbox()["undelivered"] == 0,
                drain_limit,
                "the daemon to deliver its backlog",
                interval=0.2,
            )
            return time.monotonic() - began

        # Warm both up (imports, connection pools, SQLite pages); not counted.
        for name, url in urls.items():
            run_loadgen(procs, tmp, url, prefix=f"warm{name}-", duration=1.0, concurrency=8)
        drain()

        for r in range(a.rounds):
            order = ["daemon", "bare"] if r % 2 == 0 else ["bare", "daemon"]
            for name in order:
                cpu0 = cpu_seconds(pids[name])
                report = run_loadgen(
                    procs,
                    tmp,
                    urls[name],
                    prefix=f"r{r}{name}-",
                    duration=a.duration,
                    concurrency=a.concurrency,
                    warmup=0.5,
                )
                report["drain_s"] = drain() if name == "daemon" else 0.0
                # With --deliver, the daemon's includes delivering the round's events.
                report["cpu_us_per_req"] = (
                    1e6 * (cpu_seconds(pids[name]) - cpu0) / max(1, int(report["ok_total"]))
                )
                results[name].append(report)
                print(
                    f"  round {r + 1} {name:6s} {report['req_per_s']:8.0f} req/s"
                    f"  p50 {report['p50_ms']:6.2f} ms  p99 {report['p99_ms']:6.2f} ms"
                    f"  statuses {report['statuses']} errors {report['errors']}"
                    + f"  cpu {report['cpu_us_per_req']:.0f} us/req"
                    + (f"  drain {report['drain_s']:.1f} s" if name == "daemon" else "")
                )
        outbox = daemon.outbox()

    med = {name: median([float(r["req_per_s"]) for r in rs]) for name, rs in results.items()}
    ratio = med["daemon"] / med["bare"] if med["bare"] else float("nan")
    rows = []
    for name in ("daemon", "bare"):
        rs = results[name]
        rows.append(
            [
                name,
                f"{med[name]:.0f}",
                " / ".join(f"{float(r['req_per_s']):.0f}" for r in rs),
                f"{median([float(r['p50_ms']) for r in rs]):.2f}",
                f"{median([float(r['p99_ms']) for r in rs]):.2f}",
                f"{median([float(r['cpu_us_per_req']) for r in rs]):.0f}",
                sum(int(r["errors"]) for r in rs)
                + sum(n for r in rs for s, n in dict(r["statuses"]).items() if s != "200"),
            ]
        )
    print()
    print(
        table(
            [
                "target",
                "median req/s",
                "rounds req/s",
                "p50 ms",
                "p99 ms",
                "CPU us/req",
                "non-200",
            ],
            rows,
        )
    )
    print()
    met = ratio >= TARGET_RATIO
    if a.deliver:
        verdict = "the target is for intake alone; run without --deliver"
    else:
        verdict = f"target >= {TARGET_RATIO}: {'MET' if met else 'MISSED'}"
    print(f"ratio daemon/bare = {ratio:.2f}   ({verdict})")
    cpu = {n: median([float(r["cpu_us_per_req"]) for r in rs]) for n, rs in results.items()}
    print(
        f"CPU per request: daemon {cpu['daemon']:.0f} us = {cpu['daemon'] / cpu['bare']:.1f} x"
        f" bare {cpu['bare']:.0f} us (steadier than req/s when the machine is shared)"
    )
    drains = " / ".join(f"{float(r['drain_s']):.1f}" for r in results["daemon"])
    print(
        f"daemon: outbox accepted {outbox['accepted']} events in {outbox['commits']} commits"
        + (f"; backlog delivered after each round in {drains} s" if a.deliver else "")
        + ("; commits on the helper thread (slow storage)" if outbox["slow_storage"] else "")
    )
    print(
        "p50/p99: response latency seen by the load generator (closed loop, so it includes"
        " queueing); CPU us/req: the target process's CPU per 200"
        + (", the daemon's including the delivery of those events" if a.deliver else "")
    )
    return 0 if met or a.deliver else 1


if __name__ == "__main__":
    sys.exit(main())
