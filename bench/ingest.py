"""Webhook intake: signed single-entity legacy webhook POSTs per second into the real daemon,
against a bare aiohttp server that only reads the body and answers 200.

Same load generator (its own process, N connections back to back, every POST a distinct entity
id so nothing is deduplicated), same run, same machine, rounds alternating between the targets.
The daemon runs with durability "full" and one webhook instance whose callback is a local
receiver answering 200 at once; after each daemon round the benchmark waits until the accepted
events are delivered, so that backlog delivery does not steal CPU from the next round.

    python bench/ingest.py [--quick] [--rounds 3] [--duration 5] [--concurrency 64]

Target: median daemon req/s >= 0.6 x median bare req/s.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import (
    Daemon,
    Procs,
    cpu_seconds,
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
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    a = parser.parse_args()
    if a.quick:
        a.rounds, a.duration = 2, 2.0
    drain_limit = 60.0

    print(f"ingest benchmark: {machine()}")
    print(
        f"  {a.rounds} rounds x {a.duration:g} s per target, {a.concurrency} connections,"
        f" single-entity signed legacy bodies, daemon durability {a.durability!r}"
    )
    results: dict[str, list[dict[str, object]]] = {"daemon": [], "bare": []}
    with workdir(a.keep) as tmp, Procs() as procs:
        _, callback, _ = start_receiver(procs, tmp, verify=False)
        daemon = Daemon(procs, tmp, callback, durability=a.durability, log_level="warning")
        _, bare_url = start_bare(procs, tmp)
        daemon.wait_ready()
        urls = {"daemon": daemon.url, "bare": bare_url}

        def drain() -> float:
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
                cpu0 = cpu_seconds(daemon.pid)
                report = run_loadgen(
                    procs,
                    tmp,
                    urls[name],
                    prefix=f"r{r}{name}-",
                    duration=a.duration,
                    concurrency=a.concurrency,
                    warmup=0.5,
                )
                report["daemon_cpu_s"] = cpu_seconds(daemon.pid) - cpu0
                report["drain_s"] = drain() if name == "daemon" else 0.0
                results[name].append(report)
                print(
                    f"  round {r + 1} {name:6s} {report['req_per_s']:8.0f} req/s"
                    f"  p50 {report['p50_ms']:6.2f} ms  p99 {report['p99_ms']:6.2f} ms"
                    f"  statuses {report['statuses']} errors {report['errors']}"
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
                sum(int(r["errors"]) for r in rs)
                + sum(n for r in rs for s, n in dict(r["statuses"]).items() if s != "200"),
            ]
        )
    print()
    print(
        table(
            ["target", "median req/s", "rounds req/s", "p50 ms", "p99 ms", "non-200"],
            rows,
        )
    )
    print()
    verdict = "MET" if ratio >= TARGET_RATIO else "MISSED"
    print(f"ratio daemon/bare = {ratio:.2f}   (target >= {TARGET_RATIO}: {verdict})")
    drains = [float(r["drain_s"]) for r in results["daemon"]]
    print(
        f"daemon: outbox accepted {outbox['accepted']} events in {outbox['commits']} commits;"
        f" backlog delivered after each round in {' / '.join(f'{d:.1f}' for d in drains)} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
